"""What the escalations tell the room above them (notifications), which connects in healing/apps.py: the queue
never imports what sends it.

notice_due: sent once a change that must be told is committed (raised, level rose, reopened), with
escalation_id (int), notice (int: the escalation's notice number, unique per change) and level (str). Sent
with send_robust: a receiver's error is logged, never the raise's failure."""

from django.dispatch import Signal

notice_due = Signal()
