"""Writes of error learning: folding each result into its effectiveness rows, taking back a success that turned
out a failure, and forgetting what was learned (audited).

Every fold is a compare-and-set on the row's `version`: read the row, compute its new sums with stats.fold,
`filter(pk=..., version=v).update(...)`; zero rows means another fold won the race, and this one reads again.
A row is created on its first result; two first results racing on the unique constraint make one of them
fold into the other's row. The rows of a batch are folded in one stable order (scope, key), so that two
batches folding the same rows at once wait for each other instead of deadlocking.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from django.db import IntegrityError, models, transaction

from core.api.errors import InvalidInput
from core.audit import services as audit
from core.audit.services import Actor
from core.infra.conf import rebound
from recovery import metrics
from recovery.breakers.models import Service
from recovery.errors.models import ErrorPattern
from recovery.learning import selectors, stats
from recovery.learning.models import Effectiveness

log = logging.getLogger(__name__)

Scope = Effectiveness.Scope
Outcome = Literal["succeeded", "failed", "unknown"]
OUTCOMES = ("succeeded", "failed", "unknown")
# A lost race means another fold of the same row committed: a fold that loses this often is a bug, not load.
MAX_RACES = 100


@dataclass(frozen=True)
class Result:
    """How one recovery ended: what was done (an action key, stats.py), for which error, and whether it worked."""

    action: str  # retry, wait, fallback:cache, fallback:service:x, degrade, escalate, abort, server_retry, healing:<n>
    service: str
    error_class: str  # "" when not known (healing runs): folded into the service scope with class ""
    fingerprint: str  # "" when not known: then no pattern-scope row is touched
    outcome: Outcome
    at: datetime  # when the result became known
    recover_s: float | None = None  # succeeded only: seconds from the answer/start to recovery
    recovered_after_s: float | None = None  # retry/wait successes: seconds after the first failure it worked
    source: str = "plan"  # plan, retry_job, healing_run (for the log line and the metric only)


@dataclass(frozen=True)
class _Key:
    """One row a result folds into: its scope and the fields its unique constraint names."""

    scope: str
    fingerprint: str
    service: str
    error_class: str
    action: str

    @property
    def order(self) -> tuple[str, ...]:
        if self.scope == Scope.PATTERN:
            return (self.scope, self.fingerprint, self.action)
        return (self.scope, self.service, self.error_class, self.action)

    def lookup(self) -> dict[str, str]:
        if self.scope == Scope.PATTERN:
            return {"scope": self.scope, "fingerprint": self.fingerprint, "action": self.action}
        return {
            "scope": self.scope,
            "service": self.service,
            "error_class": self.error_class,
            "action": self.action,
        }


def _clip(value: str, field: str) -> str:
    # Keys built from what agents named (a fallback service and operation) may pass a column's length: cut
    # rather than fail the transaction that ended the plan.
    length = getattr(Effectiveness._meta.get_field(field), "max_length", None)
    return value[:length] if length else value


def _keys(result: Result) -> list[_Key]:
    """The rows one result folds into: its pattern's (when it has one) and its service's."""
    service = _clip(result.service, "service")
    error_class = _clip(result.error_class, "error_class")
    action = _clip(result.action, "action")
    keys = [_Key(Scope.SERVICE, "", service, error_class, action)]
    if result.fingerprint:
        keys.append(
            _Key(Scope.PATTERN, _clip(result.fingerprint, "fingerprint"), service, error_class, action)
        )
    return keys


def _half_life_s() -> float:
    return float(rebound("LEARNING_HALF_LIFE_DAYS")) * stats.DAY_S


def _sum_fields(sums: stats.Sums) -> dict[str, float]:
    return {
        "tries": sums.tries,
        "successes": sums.successes,
        "recover_s_sum": sums.recover_s_sum,
        "delay_s_sum": sums.delay_s_sum,
        "delay_weight": sums.delay_weight,
        "as_of_s": sums.as_of_s,
    }


def _folded(sums: stats.Sums, result: Result, half_life_s: float) -> stats.Sums:
    succeeded = result.outcome == "succeeded"
    return stats.fold(
        sums,
        at_s=result.at.timestamp(),
        half_life_s=half_life_s,
        succeeded=succeeded,
        recover_s=result.recover_s if succeeded else None,
        recovered_after_s=result.recovered_after_s if succeeded else None,
    )


def _counts(result: Result) -> dict[str, int]:
    return {
        "total_tries": 1,
        "total_successes": int(result.outcome == "succeeded"),
        "total_unknown": int(result.outcome == "unknown"),
    }


def _create(key: _Key, result: Result, half_life_s: float) -> bool:
    """The row with its first result; False when another fold created it first (then fold into that one)."""
    try:
        # A savepoint: the unique constraint's refusal must not break the caller's transaction.
        with transaction.atomic():
            Effectiveness.objects.create(
                scope=key.scope,
                fingerprint=key.fingerprint,
                service=key.service,
                error_class=key.error_class,
                action=key.action,
                first_result_at=result.at,
                last_result_at=result.at,
                **_sum_fields(_folded(stats.Sums(as_of_s=result.at.timestamp()), result, half_life_s)),
                **_counts(result),
            )
    except IntegrityError:
        return False
    return True


def _fold(key: _Key, result: Result, half_life_s: float) -> None:
    """One result into one row, by compare-and-set on its version (created on first use)."""
    for _ in range(MAX_RACES):
        row = Effectiveness.objects.filter(**key.lookup()).first()
        if row is None:
            if _create(key, result, half_life_s):
                return
            continue
        counts = _counts(result)
        changed = Effectiveness.objects.filter(pk=row.pk, version=row.version).update(
            **_sum_fields(_folded(row.sums(), result, half_life_s)),
            total_tries=row.total_tries + counts["total_tries"],
            total_successes=row.total_successes + counts["total_successes"],
            total_unknown=row.total_unknown + counts["total_unknown"],
            first_result_at=min(row.first_result_at, result.at),
            last_result_at=max(row.last_result_at, result.at),
            version=row.version + 1,
        )
        if changed:
            return
    raise RuntimeError(f"learning: gave up folding into {key} after {MAX_RACES} lost races")


def _check(result: Result) -> None:
    if result.outcome not in OUTCOMES:
        raise ValueError(f"learning: unknown outcome {result.outcome!r}")
    if not result.action or not result.service:
        raise ValueError(f"learning: a result needs an action and a service: {result!r}")


def record(results: Sequence[Result]) -> None:
    """Fold each result into its pattern-scope row (when fingerprint) and its service-scope row (service,
    error_class, action). Call it inside the transaction that set the results: exactly once per result.
    Rows are touched in a stable order (scope, key) so two concurrent batches cannot deadlock; the batch is
    all or nothing. Counts learning_results_total{source,outcome} once committed."""
    if not results:
        return
    for result in results:
        _check(result)
    half_life_s = _half_life_s()
    # sorted() is stable: the results of one row keep their order.
    folds = sorted(((key, r) for r in results for key in _keys(r)), key=lambda kr: kr[0].order)
    with transaction.atomic():
        for key, result in folds:
            _fold(key, result, half_life_s)
        for result in results:
            log.debug(
                "learning: %s %s of %s for %s/%s (%s)",
                result.source,
                result.outcome,
                result.action,
                result.service,
                result.error_class or "-",
                result.fingerprint[:12] or "no pattern",
            )
            _count_on_commit(result.source, result.outcome)


def _count_on_commit(source: str, outcome: str) -> None:
    transaction.on_commit(lambda: metrics.learning_results_total.labels(source=source, outcome=outcome).inc())


def _retract(key: _Key, result: Result, originally_at: datetime, half_life_s: float) -> bool:
    for _ in range(MAX_RACES):
        row = Effectiveness.objects.filter(**key.lookup()).first()
        if row is None:
            return False  # nothing was counted here (reset meanwhile): nothing to take back
        sums = stats.retract(
            row.sums(),
            at_s=result.at.timestamp(),
            originally_at_s=originally_at.timestamp(),
            half_life_s=half_life_s,
        )
        if Effectiveness.objects.filter(pk=row.pk, version=row.version).update(
            **_sum_fields(sums),
            total_successes=max(row.total_successes - 1, 0),
            last_result_at=max(row.last_result_at, result.at),
            version=row.version + 1,
        ):
            return True
    raise RuntimeError(f"learning: gave up retracting from {key} after {MAX_RACES} lost races")


def retract_success(result: Result, *, originally_at: datetime) -> None:
    """A success counted at `originally_at` turned out a failure (stats.retract), in both scopes; total_successes
    -1 (never below 0). `result` names the rows (action, service, error class, fingerprint) and `at` is when
    the failure became known."""
    half_life_s = _half_life_s()
    with transaction.atomic():
        for key in sorted(_keys(result), key=lambda k: k.order):
            if not _retract(key, result, originally_at, half_life_s):
                log.info("learning: no row of %s to retract a success from", key)


def _target(service: str | None, fingerprint: str | None) -> models.Model:
    """What the reset's audit event is about: the service or the pattern when they exist (their admin history
    then shows it), else an unsaved row naming the filter."""
    if service:
        found_service = Service.objects.filter(name=service).first()
        if found_service is not None:
            return found_service
    if fingerprint:
        pattern = ErrorPattern.objects.filter(fingerprint=fingerprint).first()
        if pattern is not None:
            return pattern
    return Effectiveness(
        scope=Scope.PATTERN if fingerprint else Scope.SERVICE,
        fingerprint=fingerprint or "",
        service=service or "*",
        action="*",
    )


def reset(*, service: str | None = None, fingerprint: str | None = None, actor: Actor, reason: str) -> int:
    """Forget what was learned (an operator after a fix; the drill's fresh start): deletes the rows of a service
    (both scopes: pattern rows whose `service` matches too) and/or of a pattern (both given: the rows matching
    both); at least one of the two (InvalidInput otherwise, naming the field). Audited (one event, with the
    count). Answers how many rows went. Drops this process's planner cache."""
    service = (service or "").strip() or None
    fingerprint = (fingerprint or "").strip() or None
    if service is None and fingerprint is None:
        raise InvalidInput("Name a service or a pattern whose learning to forget.", field="service")
    reason = audit.require_reason(reason)
    rows = Effectiveness.objects.all()
    if service is not None:
        rows = rows.filter(service=service)
    if fingerprint is not None:
        rows = rows.filter(scope=Scope.PATTERN, fingerprint=fingerprint)
    with transaction.atomic():
        deleted, _ = rows.delete()
        filters: dict[str, Any] = {"service": service, "fingerprint": fingerprint}
        audit.record(
            actor,
            "learning.reset",
            _target(service, fingerprint),
            reason=reason,
            before=filters,
            after={**filters, "deleted": deleted},
        )
        transaction.on_commit(selectors.forget)
    selectors.forget()
    log.info("learning: %s forgot %d rows (%s)", actor.label, deleted, filters)
    return deleted
