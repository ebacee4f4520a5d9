"""What the recovery decisions tell the floor above them (healing's escalation queue), which connects in
healing/apps.py: recovery never imports healing.

plan_decided: sent once a recovery plan's row is committed, with send_robust (a receiver's error is logged, never
the plan's failure), with plan_id (str, the RecoveryPlan's uuid), service, operation, action (retry, fallback,
wait, degrade, escalate, abort), chain_exhausted (bool: a fallback was looked for and none was available),
escalation_level (str | None: "warning" for an error a human must act on, "critical" for critical work with
nothing left; None unless the action is escalate), reason, error_class, severity and kind (str)."""

from django.dispatch import Signal

plan_decided = Signal()
