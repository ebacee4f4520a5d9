"""Recovery plans: gather what the planner must know, ask it, and keep its answer and whether following it worked.

Every plan is a RecoveryPlan row with `inputs`, what the planner saw (the policy, the budget, the breaker, the
degradation level, the chain), so that an operator can replay any decision. Each fallback chosen is a
FallbackInvocation row, and a chain found empty-handed is one too (kind "exhausted").

The retry budget is spent only when the answer is `retry`: the planner decides on a peek, then the spend is
atomic (`budget.try_retry`); if another agent took the last retry in between, the planner decides again with
the budget spent. No network I/O happens inside the transaction that writes the rows.

Plans feed error learning (recovery/learning): every plan's result is folded once into the effectiveness
figures of its action, in the transaction that sets the result (as it is answered, from the outcome that names
it, or as `unknown` when none came), and a success that a later outcome says failed is taken back. What was
learned for the error reaches the planner as `Inputs.learned`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import redis
from django.db import DatabaseError, connection, transaction
from django.db.models import Count, FloatField, Q
from django.db.models.expressions import RawSQL
from django.utils import timezone

from core.audit.services import Actor
from core.infra.conf import rebound
from recovery import metrics
from recovery.breakers import registry as breaker_registry
from recovery.breakers.models import Service
from recovery.breakers.services import fail_mode
from recovery.decisions import budget, fallbacks, planner, policies, signals
from recovery.decisions.models import FallbackInvocation, RecoveryPlan, RetryPolicy
from recovery.decisions.planner import BudgetInput, Decision, Inputs, LearnedInput, PolicyInput
from recovery.degradation import selectors as degradation_selectors
from recovery.errors.classification import ErrorReport
from recovery.errors.services import classify_report
from recovery.errors.writes import Classified
from recovery.learning import selectors as learning_selectors
from recovery.learning import services as learning
from recovery.learning import stats

if TYPE_CHECKING:
    from recovery.breakers.services import OutcomeReport

log = logging.getLogger(__name__)
Result = RecoveryPlan.Result
SUCCESS_RATE_WINDOW = timedelta(hours=1)
# A plan whose outcome has not come this long after the moment it said to act (its delay_s) gets the result
# `unknown`: the agent followed it without saying so, or died. Long enough for a call of any timeout.
PLAN_OUTCOME_GRACE = timedelta(minutes=15)
EXPIRY_BATCH = 5000
# Plans resolved as they are answered, because nothing the agent does next will say more (docs/recovery.md,
# "Plan results"): a value handed over or a step skipped lets the agent carry on (succeeded); an abort or an
# escalation gives the failure back to the caller or to a human (failed: it was not recovered).
FALLBACK_WITH_VALUE = ("static", "cache")
RESOLVED_ON_ANSWER = {
    planner.DEGRADE: Result.SUCCEEDED,
    planner.ABORT: Result.FAILED,
    planner.ESCALATE: Result.FAILED,
}


@dataclass(frozen=True)
class PlanRequest:
    service: str
    operation: str
    error: ErrorReport
    attempt: int = 1
    task_id: str = ""
    elapsed_s: float | None = None
    idempotency_key: str = ""
    cache_key: str = ""


@dataclass(frozen=True)
class Planned:
    plan: RecoveryPlan
    decision: Decision
    inputs: Inputs
    classified: Classified


# --- Gathering the inputs ----------------------------------------------------------------------------------


def _without_budget_store(service: Service, error: Exception) -> BudgetInput:

    # As the breakers do without their store: essential services fail open by default, the others closed.
    mode = fail_mode(service)
    log.warning("retry budget store unreachable, failing %s for %s: %s", mode, service.name, error)
    note = f"the budget store is unreachable: failing {mode} for {service.criticality} services"
    return BudgetInput(mode == "open", 0, 0, 0, int(service.retry_budget_window_s), note=note)


def budget_now(service: Service) -> BudgetInput:
    try:
        return budget.peek(service)
    except redis.RedisError as error:
        return _without_budget_store(service, error)


def _spend(service: Service) -> BudgetInput:
    try:
        return budget.try_retry(service)
    except redis.RedisError as error:
        return _without_budget_store(service, error)


def policy_input(
    policy: RetryPolicy, error_class: str, attempt: int, retry_after_s: float | None
) -> PolicyInput:
    return PolicyInput(
        name=policy.name if policy.pk else None,
        max_attempts=policy.max_attempts,
        deadline_s=policy.deadline_s,
        retries_class=policies.retries(policy, error_class),
        attempts_left=policies.attempts_left(policy, attempt),
        delay_s=policies.delay_s(policy, attempt, retry_after_s=retry_after_s),
        # The bounds a learned delay stays within: those policies.delay_s keeps to.
        base_delay_s=policy.base_delay_s,
        max_delay_s=min(policy.max_delay_s, float(rebound("MAX_RETRY_AFTER_S"))),
    )


def learned_inputs(*, fingerprint: str, service: str, error_class: str) -> tuple[LearnedInput, ...]:
    """What was learned for this error, as the planner takes it. Learning is advice: when its figures cannot be
    read the plan is made without them, as before there were any."""
    try:
        found = learning_selectors.for_planner(
            fingerprint=fingerprint, service=service, error_class=error_class
        )
    except DatabaseError as error:
        log.warning("learned figures unreadable for %s/%s, planning without: %s", service, error_class, error)
        return ()
    return tuple(
        LearnedInput(
            action=key,
            scope=learned.scope,
            tries=learned.figures.tries,
            successes=learned.figures.successes,
            lower_bound=learned.figures.lower_bound,
            upper_bound=learned.figures.upper_bound,
            trusted=learned.figures.trusted,
            delay_s=learned.figures.delay_s,
        )
        for key, learned in sorted(found.items())
        if stats.choosable(key)
    )


def gather(
    service: Service,
    operation: str,
    *,
    error_class: str,
    kind: str,
    severity: str = "",
    needs_human: bool = False,
    retry_after_s: float | None = None,
    attempt: int = 1,
    elapsed_s: float | None = None,
    has_idempotency_key: bool = False,
    cache_key: str = "",
    fingerprint: str = "",
) -> tuple[Inputs, RetryPolicy]:
    """Everything the planner looks at, read now."""
    op = fallbacks.operation_of(service, operation)
    critical = fallbacks.is_critical(service, op)
    policy = policies.resolve(service, operation, error_class, kind)
    level = degradation_selectors.current(service.name)
    inputs = Inputs(
        service=service.name,
        operation=operation,
        error_class=error_class,
        kind=kind,
        severity=severity,
        needs_human=needs_human,
        retry_after_s=retry_after_s,
        attempt=attempt,
        elapsed_s=elapsed_s,
        idempotent=op.idempotent if op is not None else True,
        has_idempotency_key=has_idempotency_key,
        operation_critical=op.critical if op is not None else None,
        essential=service.criticality == Service.Criticality.ESSENTIAL,
        policy=policy_input(policy, error_class, attempt, retry_after_s),
        budget=budget_now(service),
        breaker=fallbacks.breaker_info(service),
        degradation_level=level.level,
        skipped_at_level=degradation_selectors.skipped_at(level.level, service),
        chain=fallbacks.chain_status(service, operation, critical=critical, cache_key=cache_key),
        learned=learned_inputs(fingerprint=fingerprint, service=service.name, error_class=error_class),
        half_life_days=float(rebound("LEARNING_HALF_LIFE_DAYS")),
    )
    return inputs, policy


def inputs_json(inputs: Inputs) -> dict[str, Any]:
    """What the planner saw, for the plan's row: cached and static values left out (they can be large)."""
    data = asdict(inputs)
    for option in data["chain"]:
        option.pop("value", None)
    return data


# --- Planning ----------------------------------------------------------------------------------------------


def make_plan(request: PlanRequest, *, actor: Actor) -> Planned:
    service = breaker_registry.get(request.service)
    classified = classify_report(request.error)
    verdict = classified.verdict
    _record_call(service)
    inputs, policy = gather(
        service,
        request.operation,
        error_class=verdict.error_class,
        kind=verdict.kind,
        severity=verdict.severity,
        needs_human=verdict.needs_human,
        retry_after_s=classified.report.retry_after_s,
        attempt=request.attempt,
        elapsed_s=request.elapsed_s,
        has_idempotency_key=bool(request.idempotency_key),
        cache_key=request.cache_key,
        fingerprint=classified.fingerprint,
    )
    decision = planner.decide(inputs)
    if decision.action == planner.RETRY:
        inputs = replace(inputs, budget=_spend(service))
        if not inputs.budget.allowed:
            # Another agent took the window's last retry since the peek: decide again, budget spent.
            decision = planner.decide(inputs)
    plan = _write(request, service, policy, inputs, decision, actor, fingerprint=classified.fingerprint)
    return Planned(plan, decision, inputs, classified)


def _record_call(service: Service) -> None:
    # A plan request is a failed call: it counts into the window the budget is a share of.
    try:
        budget.record_calls(service, 1)
    except redis.RedisError as error:
        log.warning("retry budget store unreachable, a call of %s not counted: %s", service.name, error)


def _write(
    request: PlanRequest,
    service: Service,
    policy: RetryPolicy,
    inputs: Inputs,
    decision: Decision,
    actor: Actor,
    *,
    fingerprint: str = "",
) -> RecoveryPlan:
    now = timezone.now()
    option = decision.fallback
    result = result_on_answer(decision)
    plan = RecoveryPlan(
        agent=actor.agent,
        service=service.name,
        operation=request.operation,
        task_id=request.task_id,
        attempt=request.attempt,
        elapsed_s=request.elapsed_s,
        idempotency_key=request.idempotency_key,
        error_class=inputs.error_class,
        severity=inputs.severity,
        kind=inputs.kind,
        fingerprint=fingerprint,
        policy=policy if policy.pk else None,
        action=decision.action,
        delay_s=decision.delay_s,
        fallback=fallbacks.option_json(option) if option else None,
        attempts_left=decision.attempts_left,
        reason=decision.reason,
        inputs=inputs_json(inputs),
        created_at=now,
        result=result or Result.PENDING,
        result_at=now if result else None,
    )
    invocation = _invocation(plan, inputs, decision, actor, now)
    with transaction.atomic():
        plan.save()
        if invocation is not None:
            invocation.plan = plan
            invocation.save()
        if result:
            # Resolved as it is answered: its result is known now, and folds now, with the plan (once).
            learning.record([_learning_result(plan, result, now)])
        transaction.on_commit(lambda: _count(plan, invocation, decision))
        transaction.on_commit(lambda: _announce(plan, decision))
    return plan


def _announce(plan: RecoveryPlan, decision: Decision) -> None:
    """plan_decided, once the plan is committed: the escalation queue raises what a human must see (nothing
    left to fall back on, an escalation). A receiver's error is logged, never the agent's answer."""
    answers = signals.plan_decided.send_robust(
        sender=RecoveryPlan,
        plan_id=str(plan.pk),
        service=plan.service,
        operation=plan.operation,
        action=plan.action,
        chain_exhausted=decision.chain_exhausted,
        escalation_level=decision.escalation_level,
        reason=plan.reason,
        error_class=plan.error_class,
        severity=plan.severity,
        kind=plan.kind,
    )
    for receiver, answer in answers:
        if isinstance(answer, Exception):
            log.error("plan_decided receiver %r failed for plan %s: %r", receiver, plan.pk, answer)


def result_on_answer(decision: Decision) -> str | None:
    """The result of a plan that needs no further call by the agent, known as it is answered; None when the
    outcome that follows it will say (a retry, a wait, a fallback to another service)."""
    if decision.action == planner.FALLBACK:
        option = decision.fallback
        return Result.SUCCEEDED if option is not None and option.kind in FALLBACK_WITH_VALUE else None
    return RESOLVED_ON_ANSWER.get(decision.action)


def _invocation(
    plan: RecoveryPlan, inputs: Inputs, decision: Decision, actor: Actor, now: datetime
) -> FallbackInvocation | None:
    option = decision.fallback
    common = {"service": plan.service, "operation": plan.operation, "agent": actor.agent, "created_at": now}
    if option is not None:
        detail = fallbacks.option_json(option) | {"why": option.why}
        return FallbackInvocation(option_id=option.id, kind=option.kind, detail=detail, **common)
    if decision.chain_exhausted:
        chain = [{"position": o.position, "kind": o.kind, "why": o.why} for o in inputs.chain]
        return FallbackInvocation(kind="exhausted", detail={"chain": chain}, **common)
    return None


def _count(plan: RecoveryPlan, invocation: FallbackInvocation | None, decision: Decision) -> None:
    metrics.recovery_plans_total.labels(action=plan.action).inc()
    if decision.action == planner.RETRY:
        metrics.retries_total.labels(service=plan.service, outcome="planned").inc()
    elif decision.retry_refused == "budget":
        metrics.retries_total.labels(service=plan.service, outcome="budget_exhausted").inc()
    if invocation is not None:
        metrics.fallback_invocations_total.labels(service=plan.service, kind=invocation.kind).inc()


# --- Options -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    """Every option for a first failure of a class, and what the planner saw to weigh them."""

    service: str
    operation: str
    error_class: str
    kind: str
    inputs: Inputs
    policy_scope: str | None  # None: no saved policy applies
    options: list[planner.Availability]


def list_options(
    *, service: Service, operation: str, error_class: str, kind: str = "", cache_key: str = ""
) -> Options:
    """Every option for a first failure of this class, with why each is or is not available now."""
    inputs, policy = gather(service, operation, error_class=error_class, kind=kind, cache_key=cache_key)
    return Options(
        service=service.name,
        operation=operation,
        error_class=error_class,
        kind=kind,
        inputs=inputs,
        policy_scope=policy.scope if policy.pk else None,
        options=planner.options(inputs),
    )


# --- Outcomes: budget calls, cached results, and whether plans worked ---------------------------------------


def on_outcomes(
    sender: object, *, reports: list[OutcomeReport], services: dict[str, Service], actor: Actor, **_: object
) -> None:
    """Receiver of the breakers' outcomes_recorded (connected in RecoveryConfig.ready())."""
    after_outcomes(reports, services, actor=actor)


def after_outcomes(reports: list[OutcomeReport], services: dict[str, Service], *, actor: Actor) -> None:
    """What the recovery side takes from a batch of outcomes (called by breakers.record_outcomes)."""
    try:
        budget.record_calls_many(services[r.service] for r in reports)
    except redis.RedisError as error:
        log.warning("retry budget store unreachable, %d calls not counted: %s", len(reports), error)
    fallbacks.store_results(
        [(r.service, r.operation, r.cache_key, r.result) for r in reports if r.success and r.has_result]
    )
    record_results([(r.plan_id, r.success) for r in reports if r.plan_id], actor=actor)


def record_results(items: Iterable[tuple[str, bool]], *, actor: Actor) -> int:
    """Set each named plan's result from the outcome that followed it: compare-and-set from pending, so the
    first outcome decides and a later one changes nothing. An agent sets only its own plans' results; a plan id
    that is unknown or another agent's is ignored. A failure naming a plan that was resolved *succeeded* as it
    was answered (a cached or static value, a skipped step) moves it to failed, once: the value handed over did
    not get the work done after all. Each result set here folds into error learning, in the same transaction."""
    first: dict[str, bool] = {}
    for plan_id, success in items:
        first.setdefault(str(plan_id), success)
    if not first:
        return 0  # the hot path: outcomes that name no plan cost nothing here
    failures = [p for p, ok in first.items() if not ok]
    now = timezone.now()
    # Which plans this call moves, exactly: the candidates are read and row-locked (in pk order, so two batches
    # cannot deadlock) in the transaction that updates them, so an outcome racing this one for the same plan
    # waits, then finds it no longer pending, and each result is folded once. Portable (the ORM, no
    # UPDATE ... RETURNING), at the cost of one SELECT beside the UPDATEs.
    named = RecoveryPlan.objects.filter(pk__in=list(first)).filter(
        Q(result=Result.PENDING) | Q(result=Result.SUCCEEDED, pk__in=failures)
    )
    if actor.agent is not None:
        named = named.filter(agent=actor.agent)
    with transaction.atomic():
        rows = list(named.select_for_update().order_by("pk").only(*LEARNING_FIELDS))
        pending = [p for p in rows if p.result == Result.PENDING]
        undone = [p for p in rows if p.result == Result.SUCCEEDED and _resolved_on_answer(p)]
        changed = 0
        for result, group in (
            (Result.SUCCEEDED, [p for p in pending if first[str(p.pk)]]),
            (Result.FAILED, [p for p in pending if not first[str(p.pk)]]),
        ):
            if group:
                changed += RecoveryPlan.objects.filter(
                    pk__in=[p.pk for p in group], result=Result.PENDING
                ).update(result=result, result_at=now)
        learning.record(
            [
                _learning_result(p, Result.SUCCEEDED if first[str(p.pk)] else Result.FAILED, now)
                for p in pending
            ]
        )
        if undone:
            changed += _undo_successes(undone, now)
    if changed:
        refresh_success_rate()
    return changed


# The fields folding a plan's result needs (record_results and expire_plans read only these).
LEARNING_FIELDS = (
    "id",
    "service",
    "error_class",
    "fingerprint",
    "action",
    "fallback",
    "elapsed_s",
    "delay_s",
    "result",
    "result_at",
    "created_at",
)


def _resolved_on_answer(plan: RecoveryPlan) -> bool:
    """A plan whose success was set as it was answered (a cached or static value handed over, a skip)."""
    kind = (plan.fallback or {}).get("kind")
    return plan.action == planner.DEGRADE or (plan.action == planner.FALLBACK and kind in FALLBACK_WITH_VALUE)


def _undo_successes(plans: list[RecoveryPlan], now: datetime) -> int:
    """succeeded -> failed for plans resolved on answer whose recovery the agent says failed (rows locked by the
    caller), and their successes taken back from what was learned, as of when they were counted."""
    moved = RecoveryPlan.objects.filter(pk__in=[p.pk for p in plans], result=Result.SUCCEEDED).update(
        result=Result.FAILED, result_at=now
    )
    for plan in plans:
        counted_at = plan.result_at or plan.created_at  # set together as it was answered
        learning.retract_success(_learning_result(plan, Result.FAILED, now), originally_at=counted_at)
    return moved


def learning_key(action: str, fallback: dict[str, Any] | None) -> str:
    """A plan's action as error learning keys it: retry, wait, degrade, escalate, abort, or fallback:<kind>..."""
    if action == planner.FALLBACK and fallback:
        return stats.fallback_key(
            str(fallback.get("kind")), fallback.get("service"), fallback.get("operation")
        )
    return action


def _learning_result(plan: RecoveryPlan, result: str, at: datetime) -> learning.Result:
    """A plan's result as error learning folds it: a success with how long recovering took (0 for a plan
    resolved on answer) and, for a retry or a wait, how long after the first failure it worked."""
    succeeded = result == Result.SUCCEEDED
    recover_s: float | None = None
    after_s: float | None = None
    if succeeded:
        recover_s = max((at - plan.created_at).total_seconds(), 0.0)
        if plan.action in (planner.RETRY, planner.WAIT):
            after_s = (plan.elapsed_s or 0.0) + (plan.delay_s or 0.0)
    return learning.Result(
        action=learning_key(plan.action, plan.fallback),
        service=plan.service,
        error_class=plan.error_class,
        fingerprint=plan.fingerprint,
        outcome="succeeded" if succeeded else "failed" if result == Result.FAILED else "unknown",
        at=at,
        recover_s=recover_s,
        recovered_after_s=after_s,
        source="plan",
    )


def expire_plans(now: datetime | None = None, limit: int = EXPIRY_BATCH) -> int:
    """Pending plans whose outcome is PLAN_OUTCOME_GRACE late (counted from when the plan said to act, its
    delay_s) get the result `unknown`: every plan ends with a result. Compare-and-set from pending, so an
    outcome that arrives at the same moment wins or loses cleanly. Answers how many expired."""
    now = now or timezone.now()
    cutoff = now - PLAN_OUTCOME_GRACE
    late = (
        RecoveryPlan.objects.filter(result=Result.PENDING, created_at__lt=cutoff)  # the index narrows
        .alias(due_s=RawSQL(_due_epoch_sql(), [], output_field=FloatField()))
        .filter(due_s__lt=cutoff.timestamp())
    )
    expired = 0
    while True:
        with transaction.atomic():
            # Locked as they are read, so exactly the plans moved here fold as unknown; one an outcome holds
            # right now is skipped (the outcome wins, and folds it).
            plans = list(late.select_for_update(skip_locked=True).order_by().only(*LEARNING_FIELDS)[:limit])
            if plans:
                expired += RecoveryPlan.objects.filter(
                    pk__in=[p.pk for p in plans], result=Result.PENDING
                ).update(result=Result.UNKNOWN, result_at=now)
                learning.record([_learning_result(p, Result.UNKNOWN, now) for p in plans])
        if len(plans) < limit:
            break
    if expired:
        log.info("%d recovery plan(s) had no outcome in time: result unknown", expired)
    return expired


def _due_epoch_sql() -> str:
    """When a plan said to act, in seconds since the epoch: created_at + delay_s. In SQL of the database's
    own dialect, as Django cannot add a float column to a date portably (SQLite keeps dates as ISO text)."""
    quote = connection.ops.quote_name
    table = quote(RecoveryPlan._meta.db_table)
    column, delay = f"{table}.{quote('created_at')}", f"COALESCE({table}.{quote('delay_s')}, 0)"
    if connection.vendor == "postgresql":
        return f"EXTRACT(EPOCH FROM {column}) + {delay}"
    return f"(julianday({column}) - 2440587.5) * 86400.0 + {delay}"


def refresh_success_rate(now: datetime | None = None) -> dict[str, float]:
    """recovery_success_rate{action}: of the last hour's plans that succeeded or failed, the share that
    succeeded; 1.0 for an action without any (nothing failed), so the gauge is always a number.
    recovery_plan_results{action,result} says how many plans each figure stands on (0: no data)."""
    since = (now or timezone.now()) - SUCCESS_RATE_WINDOW
    rows = (
        RecoveryPlan.objects.filter(created_at__gte=since)
        .values("action", "result")
        .annotate(n=Count("id"))
        .order_by()
    )
    tally: dict[str, dict[str, int]] = {action: {} for action in planner.ACTIONS}
    for row in rows:
        tally.setdefault(row["action"], {})[row["result"]] = row["n"]
    rates: dict[str, float] = {}
    for action, counts in tally.items():
        succeeded, failed = counts.get(Result.SUCCEEDED, 0), counts.get(Result.FAILED, 0)
        rates[action] = succeeded / (succeeded + failed) if succeeded + failed else 1.0
        metrics.recovery_success_rate.labels(action=action).set(rates[action])
        for result in Result.values:
            metrics.recovery_plan_results.labels(action=action, result=result).set(counts.get(result, 0))
    return rates
