"""What the transactions with compensations tell the floor above them (healing's escalation queue), which
connects in healing/apps.py: recovery never imports healing.

transaction_ended: sent once a transaction's end is committed (committed, rolled_back, rollback_failed), with
send_robust (a receiver's error is logged, never the saga's failure), with transaction_id (str, the
Transaction's uuid) and status (str). A failed rollback that an operator resumes and that then completes ends
again, as rolled_back."""

from django.dispatch import Signal

transaction_ended = Signal()
