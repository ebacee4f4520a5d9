"""What the health checks tell the rooms above them (remediation rules), which connect in healing/apps.py: the
checks never import what reacts to them."""

from django.dispatch import Signal

# Sent once a change of a check's state is committed (and after its breaker verdict, if the check drives its
# service's breaker): transition_id (int), the HealthCheckTransition row. Sent with send_robust: a receiver's
# error is logged, never the recording's failure.
state_changed = Signal()
