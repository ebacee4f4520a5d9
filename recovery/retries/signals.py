"""What the server-side retries tell the floor above them (healing's escalation queue), which connects in
healing/apps.py: recovery never imports healing.

job_finished: sent once a retry job's move to a final state is committed (succeeded; failed, which always needs
a human; cancelled by an operator), with send_robust (a receiver's error is logged, never the job's failure),
with job_id (str, the RetryJob's uuid), service (its name), operation, state (str) and needs_human (bool)."""

from django.dispatch import Signal

job_finished = Signal()
