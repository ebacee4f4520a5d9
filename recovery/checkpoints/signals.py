"""What the tasks and checkpoints tell the floor above them (healing's escalation queue), which connects in
healing/apps.py: recovery never imports healing.

tasks_went_stale: sent once running tasks marked stale (no checkpoint or heartbeat for TASK_STALE_SECONDS) are
committed, with send_robust (a receiver's error is logged, never the sweep's failure), with task_ids
(list[int], the Task rows' pks that this sweep marked: each task once per quiet spell, as a heartbeat or a
checkpoint clears stale_at)."""

from django.dispatch import Signal

tasks_went_stale = Signal()
