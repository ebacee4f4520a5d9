"""What the healing actions tell the rooms above them (the escalation queue), which connect in healing/apps.py:
the actions never import what reacts to them. Both are sent once the change is committed, with send_robust: a
receiver's error is logged, never the run's failure.

run_changed: a run was created or changed state, with run_id (int), action (its name), service, from_state
("" for a new run), to_state and state_reason (the transition's reason: for a failed run, what failed, e.g.
"verification_failed: ...").

hold_placed: an action was put on hold for a target because its runs kept failing verification (a loop), with
hold_id (int), action (its name) and service."""

from django.dispatch import Signal

run_changed = Signal()
hold_placed = Signal()
