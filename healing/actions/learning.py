"""The healing runs' feed of the error learning (recovery/learning): a run that ended is a result of its action
for its service, folded once, inside the transaction of the compare-and-set that ended it (services._move).

A run whose action acted (and, with a verify check, was verified) succeeded; one that failed, failed its
verification or lost its worker failed. Runs that never acted (rejected, expired, cancelled, skipped) say
nothing about the action and are not folded."""

from __future__ import annotations

from datetime import datetime

from healing.actions.models import HealingRun
from recovery.learning import services as learning
from recovery.learning import stats

State = HealingRun.State


def fold_run(run: HealingRun, to_state: str, finished_at: datetime) -> None:
    """Fold the run that just moved to `to_state` (nothing for a state that is not its action's result)."""
    if to_state == State.SUCCEEDED:
        began = run.started_at or run.created_at
        outcome: learning.Outcome = "succeeded"
        recover_s: float | None = max((finished_at - began).total_seconds(), 0.0)
    elif to_state == State.FAILED:
        outcome, recover_s = "failed", None
    else:
        return
    learning.record(
        [
            learning.Result(
                action=stats.healing_key(run.action.name),
                service=run.service,
                error_class="",
                fingerprint="",
                outcome=outcome,
                at=finished_at,
                recover_s=recover_s,
                source="healing_run",
            )
        ]
    )
