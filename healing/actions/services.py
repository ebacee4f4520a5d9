"""Writes of healing actions and runs: the catalog (audited), requests with the approval policy, approvals,
rejections and cancellations, the one execution of each approved run, verification, and the holds that stop
an action looping.

A run's life, every move a compare-and-set on its state and a HealingRunTransition row:

    pending_approval --enough approvals--> approved --execute_run claims it--> running
       |   |                                  |                                  |--error--> failed
       |   '--reject--> rejected              '--cancel--> cancelled             |--no verify check--> succeeded
       |--cancel--> cancelled                                                    '--> verifying --check passed--> succeeded
       '--no decision in time--> expired                                                  '--deadline--> failed (verification_failed)
    (a request within the cooldown or past the hourly limit is created `skipped`, with `not_before`)

Exactly once: only the approval whose compare-and-set moves pending_approval -> approved enqueues the execution
(on commit), and execute_run starts only by moving approved -> running with its task id as the fence; a
duplicate delivery finds the run no longer approved and exits. A worker lost mid-run leaves the run running:
maintain_runs marks it failed (worker_lost) after its timeout plus HEALING_REAPER_GRACE_SECONDS, and never runs
it again (a webhook may have acted). No network I/O inside a transaction.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from celery import current_app
from celery.exceptions import SoftTimeLimitExceeded
from django.db import IntegrityError, transaction
from django.db.models import Count, F, Q
from django.utils import timezone

from core.access import roles
from core.api.errors import Conflict, DomainError, Forbidden, InvalidInput
from core.audit import services as audit
from core.audit.models import AuditEvent
from core.audit.services import Actor
from core.infra.conf import rebound
from core.slugs import service_slug
from healing.actions import builtins, learning, metrics, params, policy, selectors, signals, webhook
from healing.actions.models import Approval, HealingAction, HealingHold, HealingRun, HealingRunTransition
from healing.actions.outputs import ActionFailed, stored, text
from healing.actions.selectors import VERIFICATION_FAILED, WORKER_LOST
from healing.checks import selectors as check_selectors
from healing.checks import services as check_services

log = logging.getLogger(__name__)

State = HealingRun.State
Kind = HealingAction.Kind
SYSTEM = "system"
# The execution's task (tasks.py), sent by name: services never import tasks.
EXECUTE_TASK = "healing.actions.tasks.execute_run"
# The task's time limits, past the action's own timeout: the soft one interrupts the action (the run fails,
# "timed out"), the hard one kills the process (the reaper then fails the run: worker_lost).
SOFT_LIMIT_MARGIN_S = 5.0
HARD_LIMIT_MARGIN_S = 15.0
# An approved run whose execution has not started this long after its approval lost its message (a broker
# outage at the approval): it is sent again. Harmless if the first arrives after all: only one claims the run.
REQUEUE_APPROVED_AFTER_S = 30.0
# While a run is verifying, its check is asked to run again this often (the check's own interval may be long).
VERIFY_PROBE_EVERY_S = 10.0
HOUR = timedelta(hours=1)
BATCH = 500
REASON_CHARS = 2000

ACTION_FIELDS = [
    "name",
    "description",
    "kind",
    "builtin",
    "risk",
    "enabled",
    "cooldown_s",
    "max_runs_per_hour",
    "timeout_s",
    "parameters_schema",
    "verify_check",
    "verify_within_s",
    "url",
    "method",
    "body_template",
]
# What an operator may set through the API (name and kind only on creation; built-ins never get a URL).
EDITABLE_FIELDS = frozenset(ACTION_FIELDS) - {"name", "kind", "builtin"}
WEBHOOK_ONLY = ("url", "method", "body_template")


def _now() -> datetime:
    return timezone.now()


def _system() -> Actor:
    return Actor(source=AuditEvent.Source.SYSTEM)


def _user_of(actor: Actor) -> Any:
    return actor.user if actor.user is not None and getattr(actor.user, "pk", None) else None


# --- the catalog -------------------------------------------------------------------------------------------------


def create_action(*, data: dict[str, Any], actor: Actor, reason: str) -> HealingAction:
    """A new webhook action (the built-ins come with Rebound). Audited; 409 when the name is taken."""
    kind = data.get("kind", Kind.WEBHOOK)
    if kind != Kind.WEBHOOK:
        raise InvalidInput(
            "only webhook actions are created: the built-ins come with Rebound's migrations", field="kind"
        )
    name = data.get("name", "")
    if HealingAction.objects.filter(name=name).exists():
        raise Conflict(f"A healing action is already named {name!r}.", field="name")
    action = HealingAction(name=name, kind=Kind.WEBHOOK)
    _apply(action, {k: v for k, v in data.items() if k not in ("name", "kind")})
    return save_action(action, actor=actor, reason=reason)


def update_action(*, name: str, data: dict[str, Any], actor: Actor, reason: str) -> HealingAction:
    """Change an action's fields (audited). Kind and name stay; a built-in has no URL, method or template."""
    action = selectors.action(name)
    if "kind" in data and data["kind"] != action.kind:
        raise InvalidInput("an action's kind cannot change", field="kind")
    if action.kind == Kind.BUILTIN:
        for name in WEBHOOK_ONLY:
            if name in data:
                raise InvalidInput(f"a built-in action calls no URL: it has no {name}", field=name)
    _apply(action, {k: v for k, v in data.items() if k != "kind"})
    return save_action(action, actor=actor, reason=reason)


def _apply(action: HealingAction, data: dict[str, Any]) -> None:
    for key, value in data.items():
        if key == "verify_check":
            # Named in the API; the admin's form hands the check itself.
            if value is None or hasattr(value, "pk"):
                action.verify_check = value
            else:
                action.verify_check_id = selectors.health_check_id(str(value))
        elif key in EDITABLE_FIELDS:
            setattr(action, key, value)
        else:
            raise InvalidInput(f"{key} cannot be set", field=key)


def save_action(action: HealingAction, *, actor: Actor, reason: str) -> HealingAction:
    """Validate and save an action (the API's and the admin's one way), with an audit event saying what changed
    and why. Refused: a parameters schema that is no valid JSON Schema (or uses what Rebound does not run), an
    unknown built-in, a webhook the outbound guard would not call."""
    validate_action(action)
    try:
        return audit.audited_save(action, ACTION_FIELDS, actor=actor, reason=reason, action="healing_action")
    except IntegrityError:
        raise Conflict(f"A healing action is already named {action.name!r}.", field="name") from None


def validate_action(action: HealingAction) -> None:
    action.parameters_schema = params.check_schema(action.parameters_schema)
    if action.kind == Kind.BUILTIN:
        if not builtins.known(action.builtin):
            known = ", ".join(builtins.names())
            raise InvalidInput(
                f"no built-in action is named {action.builtin!r} (known: {known})", field="builtin"
            )
        for name in WEBHOOK_ONLY:
            value = getattr(action, name)
            if name != "method" and value not in ("", None):
                raise InvalidInput(
                    "a built-in action calls no URL: it has no url or body_template", field=name
                )
        return
    if action.kind != Kind.WEBHOOK:
        raise InvalidInput("must be webhook or builtin", field="kind")
    if action.builtin:
        raise InvalidInput("a webhook action names no built-in", field="builtin")
    action.method = (action.method or "POST").upper()
    webhook.check(
        url=action.url,
        method=action.method,
        body_template=action.body_template,
        parameters_schema=action.parameters_schema,
    )


# --- requests ----------------------------------------------------------------------------------------------------


def request_run(
    *,
    action: str,
    service: str,
    parameters: dict[str, Any],
    reason: str,
    trigger: str,
    actor: Actor,
    requester: str | None = None,
) -> tuple[HealingRun, bool]:
    """Ask for a run of `action` on the target `service`. Answers (run, created).

    The parameters must satisfy the action's schema (400 naming `parameters.<path>`). The approval policy
    (policy.py) decides whether the run starts at once or waits for operators; a critical action asked for by
    an agent or a rule is refused (403). While a run of the action on the target is open, the request answers
    it (created False). Within the action's cooldown, or past its hourly limit for the target, the new run is
    created `skipped` with `not_before`. `requester` labels a system actor's request ("rule:<name>")."""
    reason = audit.require_reason(reason)
    service = service_slug(service)
    if trigger not in policy.TRIGGERS:
        raise InvalidInput(f"must be one of {', '.join(policy.TRIGGERS)}", field="trigger")
    _check_requester(trigger, actor)
    found = selectors.action(action)
    if not found.enabled:
        raise Conflict(f"The healing action {found.name!r} is disabled.", field="action")
    values = params.validate(found.parameters_schema, parameters)
    held = selectors.open_hold(found.pk, service) is not None
    try:
        need = policy.requirement(found.risk, trigger, held=held)
    except policy.Refused as refused:
        raise Forbidden(f"{refused}: an operator must ask for it.", field="action") from None
    for _ in range(3):
        existing = selectors.open_run(found.pk, service)
        if existing is not None:
            return existing, False
        try:
            return _create(found, service, values, reason, trigger, actor, requester, need), True
        except IntegrityError:
            continue  # another request for the same target won the race: answer its run
    raise Conflict(f"Runs of {found.name!r} on {service!r} kept changing; try again.", field="service")


def _check_requester(trigger: str, actor: Actor) -> None:
    if trigger == policy.OPERATOR and not roles.is_operator(_user_of(actor)):
        raise Forbidden("Only an operator asks for a run as an operator.", field="trigger")
    if trigger == policy.AGENT and actor.agent is None:
        raise Forbidden("Only an agent asks for a run as an agent.", field="trigger")


def _throttle(action: HealingAction, service: str, now: datetime) -> tuple[str, datetime] | None:
    """Why a new run of the action on the target may not run now, and when it may; None if it may."""
    reasons: list[str] = []
    until: datetime | None = None
    last = selectors.last_finished(action.pk, service)
    if action.cooldown_s and last is not None and last.finished_at is not None:
        ends = last.finished_at + timedelta(seconds=action.cooldown_s)
        if ends > now:
            reasons.append(
                f"cooldown: run {last.pk} finished at {last.finished_at.isoformat()}; the action's cooldown is "
                f"{action.cooldown_s} s"
            )
            until = ends
    started = selectors.started_since(action.pk, service, now - HOUR)
    if len(started) >= action.max_runs_per_hour:
        # A slot frees when the oldest of the last `max` runs leaves the hour.
        frees = started[action.max_runs_per_hour - 1] + HOUR
        reasons.append(
            f"hourly_limit: {len(started)} runs started in the last hour; at most {action.max_runs_per_hour} "
            "per target"
        )
        until = max(until, frees) if until is not None else frees
    if until is None:
        return None
    return "; ".join(reasons), until


def _create(
    action: HealingAction,
    service: str,
    values: dict[str, Any],
    reason: str,
    trigger: str,
    actor: Actor,
    requester: str | None,
    need: policy.Requirement,
) -> HealingRun:
    now = _now()
    label = (requester or actor.label)[:200]
    user = _user_of(actor)
    run = HealingRun(
        action=action,
        service=service,
        parameters=values,
        risk=action.risk,
        approvals_required=need.approvals,
        trigger=trigger,
        requested_by_user=user,
        requested_by_agent=actor.agent,
        requested_by=label,
        reason=reason,
        created_at=now,
    )
    throttled = _throttle(action, service, now)
    if throttled is not None:
        run.state, run.state_reason, run.not_before, run.finished_at = (
            State.SKIPPED,
            throttled[0],
            throttled[1],
            now,
        )
        why = f"skipped: {throttled[0]}; may run again from {throttled[1].isoformat()}"
    elif need.waits:
        run.state = State.PENDING_APPROVAL
        run.approval_deadline = now + timedelta(seconds=float(rebound("HEALING_APPROVAL_TIMEOUT_SECONDS")))
        why = need.why
    else:
        run.state = State.APPROVED
        why = need.why
    with transaction.atomic():
        run.save()
        HealingRunTransition.objects.create(
            run=run,
            from_state="",
            to_state=run.state,
            reason=text(why, REASON_CHARS),
            actor=label,
            created_at=now,
        )
        audit.record(
            actor,
            "healing_run.request",
            run,
            reason=reason,
            after={"state": run.state, "requested_by": label, "parameters": values},
        )
        if throttled is None and need.requester_approves:
            Approval.objects.create(
                run=run,
                user=user,
                decision=Approval.Decision.APPROVE,
                reason="the requesting operator's request",
                created_at=now,
            )
            audit.record(actor, "healing_run.approve", run, reason="the requesting operator's request")
        if run.state == State.APPROVED:
            _enqueue_on_commit(run)
        elif run.state == State.SKIPPED:
            _count_on_commit(action.name, State.SKIPPED)
        _changed_on_commit(run.pk, action.name, service, "", run.state, text(why, REASON_CHARS))
    log.info("healing run %s of %s on %s requested by %s: %s", run.pk, action.name, service, label, run.state)
    return run


# --- approvals, rejections, cancellations ------------------------------------------------------------------------


def _operator(actor: Actor) -> Any:
    user = _user_of(actor)
    if actor.agent is not None or not roles.is_operator(user):
        raise Forbidden("Only operators approve, reject or cancel healing runs.")
    return user


def approve(*, run_id: int | str, actor: Actor, reason: str = "") -> HealingRun:
    """One operator's approval (an Approval row and an audit event). Once enough distinct operators approved,
    the run moves to approved and its execution is enqueued, by exactly one of the approvals however many
    arrive at once. A repeated approval by the same operator answers the run and changes nothing; approving a
    run that is no longer pending approval is a 409; the requester of a high or critical run may not (403)."""
    user = _operator(actor)
    run = selectors.run(run_id)
    if run.state != State.PENDING_APPROVAL:
        if selectors.has_approved(run.pk, user.pk):
            return run
        raise Conflict(f"The run is {run.state}: only a run pending approval can be approved.", field="state")
    if not policy.requester_may_approve(run.risk) and run.requested_by_user_id == user.pk:
        raise Forbidden(
            f"A {run.risk}-risk run needs {run.approvals_required} operators other than the one who asked for it."
        )
    reason = (reason or "").strip()
    try:
        # Committed on its own, before counting: the last approval to commit sees every one before it, so
        # enough approvals always start the run, whatever their order (a count inside one transaction each
        # could miss the others' uncommitted rows and leave the run pending for ever).
        with transaction.atomic():
            Approval.objects.create(
                run=run, user=user, decision=Approval.Decision.APPROVE, reason=reason, created_at=_now()
            )
            audit.record(actor, "healing_run.approve", run, reason=reason, before={"state": run.state})
    except IntegrityError:
        return selectors.run(run.pk)  # this operator approved already: one approval, the same answer
    _start_if_approved(run.pk, actor)
    return selectors.run(run.pk)


def _start_if_approved(run_id: int, actor: Actor) -> bool:
    run = HealingRun.objects.select_related("action").get(pk=run_id)
    if run.state != State.PENDING_APPROVAL:
        return False
    counted = policy.counted_approvers(selectors.approvers(run_id), run.risk, run.requested_by_user_id)
    if len(counted) < run.approvals_required:
        return False
    now = _now()
    waited = (now - run.created_at).total_seconds()

    def started() -> None:
        _enqueue_on_commit(run)
        transaction.on_commit(lambda: metrics.healing_approval_wait_seconds.observe(max(0.0, waited)))

    why = f"approved by {len(counted)} operator(s) of {run.approvals_required} required (last: {actor.label})"
    return _move(
        run,
        State.PENDING_APPROVAL,
        State.APPROVED,
        why,
        actor.label,
        also=started,
        now=now,
    )


def reject(*, run_id: int | str, actor: Actor, reason: str) -> HealingRun:
    """pending_approval -> rejected (operators; a reason required): an Approval row and an audit event."""
    reason = audit.require_reason(reason)
    return _decide(run_id, actor, reason, Approval.Decision.REJECT, State.REJECTED, (State.PENDING_APPROVAL,))


def cancel(*, run_id: int | str, actor: Actor, reason: str) -> HealingRun:
    """pending_approval or approved -> cancelled (operators; a reason required). An approved run's execution,
    if already queued, finds the run cancelled and does nothing."""
    reason = audit.require_reason(reason)
    allowed = (State.PENDING_APPROVAL, State.APPROVED)
    return _decide(run_id, actor, reason, Approval.Decision.CANCEL, State.CANCELLED, allowed)


def _decide(
    run_id: int | str, actor: Actor, reason: str, decision: str, to_state: str, allowed: tuple[str, ...]
) -> HealingRun:
    user = _operator(actor)
    verb = "rejected" if decision == Approval.Decision.REJECT else "cancelled"
    for _ in range(3):  # the state may move between the read and the compare-and-set (an approval, an expiry)
        run = selectors.run(run_id)
        if run.state not in allowed:
            raise Conflict(
                f"The run is {run.state}: only a run {' or '.join(allowed)} can be {verb}.", field="state"
            )
        before = run.state

        def record(run: HealingRun = run, before: str = before) -> None:
            Approval.objects.create(run=run, user=user, decision=decision, reason=reason, created_at=_now())
            audit.record(
                actor,
                f"healing_run.{decision}",
                run,
                reason=reason,
                before={"state": before},
                after={"state": to_state},
            )

        why = f"{verb} by {actor.label}: {reason}"
        fields = {"finished_at": _now(), "state_reason": text(why, REASON_CHARS)}
        if _move(run, before, to_state, why, actor.label, fields=fields, also=record):
            return selectors.run(run.pk)
    raise Conflict("The run kept changing; look at it again.", field="state")


# --- holds -------------------------------------------------------------------------------------------------------


def clear_hold(*, hold_id: int | str, actor: Actor, reason: str) -> HealingHold:
    """An operator makes the action automatic again for the target (audited, a reason required)."""
    reason = audit.require_reason(reason)
    user = _operator(actor)
    hold = selectors.hold(hold_id)
    now = _now()
    with transaction.atomic():
        cleared = HealingHold.objects.filter(pk=hold.pk, cleared_at__isnull=True).update(
            cleared_at=now, cleared_by=user, cleared_reason=reason
        )
        if not cleared:
            raise Conflict("The hold is cleared already.", field="id")
        audit.record(
            actor,
            "healing_hold.clear",
            hold,
            reason=reason,
            before={"cleared_at": None},
            after={"cleared_at": now.isoformat(), "cleared_by": actor.label},
        )
    return selectors.hold(hold.pk)


def _hold_if_looping(run: HealingRun, now: datetime) -> HealingHold | None:
    """After a failed verification: HEALING_HOLD_AFTER_FAILED_VERIFICATIONS of them for this action and target
    within an hour (since the last hold was cleared) put the action on hold for the target."""
    limit = int(rebound("HEALING_HOLD_AFTER_FAILED_VERIFICATIONS"))
    since = now - HOUR
    cleared = selectors.last_cleared_at(run.action_id, run.service)
    if cleared is not None and cleared > since:
        since = cleared
    failures = selectors.failed_verifications_since(run.action_id, run.service, since)
    if failures < limit or selectors.open_hold(run.action_id, run.service) is not None:
        return None
    why = (
        f"{failures} verifications of {run.action.name} on {run.service} failed within an hour (the last: run "
        f"{run.pk}): requests from agents and rules now wait for an operator's approval until a human clears "
        "this hold"
    )
    try:
        with transaction.atomic():
            hold = HealingHold.objects.create(
                action_id=run.action_id, service=run.service, reason=why, created_at=now
            )
            audit.record(_system(), "healing_hold.create", hold, reason=why)
            transaction.on_commit(lambda: _announce_hold(hold.pk, run.action.name, run.service))
    except IntegrityError:
        return None  # another settlement put the hold first
    log.warning("healing hold: %s", why)
    return hold


# --- execution ---------------------------------------------------------------------------------------------------


def enqueue_execution(run_id: int, timeout_s: float) -> None:
    """Send the execution's task. A broker failure is logged, not raised: maintain_runs sends approved runs
    that did not start again."""
    try:
        current_app.send_task(
            EXECUTE_TASK,
            args=[run_id],
            soft_time_limit=timeout_s + SOFT_LIMIT_MARGIN_S,
            time_limit=timeout_s + HARD_LIMIT_MARGIN_S,
        )
    except Exception as error:
        log.warning("could not enqueue the execution of healing run %s: %s", run_id, error)


def _enqueue_on_commit(run: HealingRun) -> None:
    run_id, timeout = run.pk, float(run.action.timeout_s)
    transaction.on_commit(lambda: enqueue_execution(run_id, timeout))


def execute_run(run_id: int, task_id: str) -> str:
    """Run an approved run's action once, as the task `task_id`. Answers what happened, for the logs: "stale"
    when the run is not approved any more (a duplicate delivery, a cancellation), else its new state."""
    now = _now()
    with transaction.atomic():
        claimed = HealingRun.objects.filter(pk=run_id, state=State.APPROVED).update(
            state=State.RUNNING, task_id=task_id, started_at=now, updated_at=now
        )
        if not claimed:
            return "stale"
        HealingRunTransition.objects.create(
            run_id=run_id,
            from_state=State.APPROVED,
            to_state=State.RUNNING,
            reason=f"started by task {task_id}",
            actor=SYSTEM,
            created_at=now,
        )
        run = HealingRun.objects.select_related("action", "action__verify_check").get(pk=run_id)
        _changed_on_commit(
            run.pk, run.action.name, run.service, State.APPROVED, State.RUNNING, f"started by task {task_id}"
        )
    output: dict[str, Any] = {}
    error: str | None = None
    try:
        output = webhook.call(run) if run.action.kind == Kind.WEBHOOK else builtins.run(run)
    except ActionFailed as failed:
        output, error = failed.output, failed.message
    except SoftTimeLimitExceeded:
        error = f"the action did not finish within its timeout ({run.action.timeout_s:g} s)"
    except DomainError as refused:
        error = refused.message
    except Exception as crashed:
        log.exception("healing run %s: the action %s raised", run_id, run.action.name)
        error = f"{type(crashed).__name__}: {crashed}"
    return _after_action(run, task_id, stored(output or {}), error)


def _after_action(run: HealingRun, task_id: str, output: Any, error: str | None) -> str:
    """running -> failed, verifying or succeeded; fenced by the task id, so that a run the reaper settled
    meanwhile stays as the reaper left it."""
    acted = _now()
    if error is not None:
        why = text(error, REASON_CHARS)
        fields = {"acted_at": acted, "finished_at": acted, "output": output, "state_reason": why}
        moved = _move(run, State.RUNNING, State.FAILED, why, SYSTEM, fields=fields, fence=task_id, now=acted)
        return State.FAILED if moved else "stale"
    check = run.action.verify_check
    if check is not None:
        deadline = acted + timedelta(seconds=run.action.verify_within_s)
        why = f"acted; waiting up to {run.action.verify_within_s} s for the health check {check.name} to pass"
        fields = {"acted_at": acted, "verify_deadline": deadline, "output": output}
        if not _move(
            run, State.RUNNING, State.VERIFYING, why, SYSTEM, fields=fields, fence=task_id, now=acted
        ):
            return "stale"
        _probe(check.pk, run.pk)
        return State.VERIFYING
    fields = {"acted_at": acted, "finished_at": acted, "output": output}
    moved = _move(
        run, State.RUNNING, State.SUCCEEDED, "acted (no verify check)", SYSTEM, fields=fields, fence=task_id
    )
    return State.SUCCEEDED if moved else "stale"


def _probe(check_id: int, run_id: int) -> None:
    """Ask the verify check to run now (best effort: its own schedule runs it anyway)."""
    try:
        check_services.enqueue_run(check_id, source="verification")
    except Exception as error:
        log.warning("healing run %s: could not ask check %s to run: %s", run_id, check_id, error)


# --- maintenance (beat, every 5 s) -------------------------------------------------------------------------------


def maintain_runs(now: datetime | None = None) -> dict[str, int]:
    """Expire unanswered approvals, start pending runs that have their approvals, send again approved runs
    whose message was lost, mark runs whose worker died failed (worker_lost), and settle verifications.
    Idempotent; safe in several processes at once."""
    now = now or _now()
    done = {
        "expired": expire_approvals(now),
        "started": start_ready(),
        "requeued": requeue_approved(now),
        "reaped": reap_lost(now),
    }
    done.update(settle_verifications(now))
    return done


def expire_approvals(now: datetime) -> int:
    waiting = HealingRun.objects.select_related("action").filter(
        state=State.PENDING_APPROVAL, approval_deadline__lte=now
    )
    timeout = float(rebound("HEALING_APPROVAL_TIMEOUT_SECONDS"))
    expired = 0
    for run in waiting[:BATCH]:
        why = f"expired: no decision within {timeout:g} s (HEALING_APPROVAL_TIMEOUT_SECONDS)"
        fields = {"finished_at": now, "state_reason": why}
        expired += _move(run, State.PENDING_APPROVAL, State.EXPIRED, why, SYSTEM, fields=fields, now=now)
    return expired


def start_ready() -> int:
    """Runs pending approval that have their approvals: approved now. The approvals start their run themselves;
    this is the net under an approval committed inside a caller's longer transaction, whose count could have
    missed another's."""
    approvals = Count("approvals", filter=Q(approvals__decision=Approval.Decision.APPROVE))
    ready = (
        HealingRun.objects.filter(state=State.PENDING_APPROVAL)
        .annotate(given=approvals)
        .filter(given__gte=F("approvals_required"))
        .values_list("pk", flat=True)
    )
    return sum(_start_if_approved(run_id, _system()) for run_id in list(ready[:BATCH]))


def requeue_approved(now: datetime) -> int:
    stuck = HealingRun.objects.select_related("action").filter(
        state=State.APPROVED, updated_at__lt=now - timedelta(seconds=REQUEUE_APPROVED_AFTER_S)
    )
    requeued = 0
    for run in stuck[:BATCH]:
        with transaction.atomic():
            if HealingRun.objects.filter(pk=run.pk, state=State.APPROVED, updated_at=run.updated_at).update(
                updated_at=now
            ):
                _enqueue_on_commit(run)
                requeued += 1
    return requeued


def reap_lost(now: datetime) -> int:
    """Running runs past their action's timeout plus HEALING_REAPER_GRACE_SECONDS lost their worker: failed,
    worker_lost, and never run again (whether the action acted is unknown)."""
    grace = float(rebound("HEALING_REAPER_GRACE_SECONDS"))
    reaped = 0
    for run in (
        HealingRun.objects.select_related("action").filter(state=State.RUNNING).order_by("started_at")[:BATCH]
    ):
        limit = float(run.action.timeout_s) + grace
        if run.started_at is None or run.started_at + timedelta(seconds=limit) > now:
            continue
        why = (
            f"{WORKER_LOST}: still running {limit:g} s after it started (its timeout plus the reaper's grace): its "
            "worker was lost. Not run again: the action may have acted."
        )
        fields = {"finished_at": now, "state_reason": why}
        reaped += _move(
            run, State.RUNNING, State.FAILED, why, SYSTEM, fields=fields, fence=run.task_id, now=now
        )
    if reaped:
        log.warning("healing: %d runs lost their worker and were marked failed (worker_lost)", reaped)
    return reaped


def settle_verifications(now: datetime) -> dict[str, int]:
    """Each verifying run: succeeded once its check passed since the action acted; failed
    (verification_failed) past its deadline; otherwise its check is asked to run again now and then."""
    counts = {"verified": 0, "unverified": 0, "probed": 0}
    waiting = HealingRun.objects.select_related("action", "action__verify_check").filter(
        state=State.VERIFYING
    )
    for run in waiting.order_by("verify_deadline")[:BATCH]:
        check = run.action.verify_check
        since = run.acted_at or run.started_at or run.created_at
        if check is None:
            why = "succeeded, not verified: the action's verify check was removed meanwhile"
            counts["verified"] += _finish_verification(run, State.SUCCEEDED, why, now)
        elif check_selectors.passed_since(check.pk, since):
            why = f"verified: the health check {check.name} passed"
            counts["verified"] += _finish_verification(run, State.SUCCEEDED, why, now)
        elif run.verify_deadline is None or run.verify_deadline <= now:
            why = (
                f"{VERIFICATION_FAILED}: the health check {check.name} did not pass within "
                f"{run.action.verify_within_s} s of the action"
            )
            if _finish_verification(run, State.FAILED, why, now):
                counts["unverified"] += 1
                _hold_if_looping(run, now)
        elif run.updated_at <= now - timedelta(seconds=VERIFY_PROBE_EVERY_S):
            asked = HealingRun.objects.filter(
                pk=run.pk, state=State.VERIFYING, updated_at=run.updated_at
            ).update(updated_at=now)
            if asked:
                _probe(check.pk, run.pk)
                counts["probed"] += 1
    return counts


def _finish_verification(run: HealingRun, to_state: str, why: str, now: datetime) -> bool:
    fields = {"finished_at": now, "state_reason": text(why, REASON_CHARS)}
    return _move(run, State.VERIFYING, to_state, why, SYSTEM, fields=fields, now=now)


# --- the one way a run changes state -----------------------------------------------------------------------------


def _move(
    run: HealingRun,
    from_state: str,
    to_state: str,
    reason: str,
    actor_label: str,
    *,
    fields: dict[str, Any] | None = None,
    fence: str | None = None,
    also: Callable[[], None] | None = None,
    now: datetime | None = None,
) -> bool:
    """Compare-and-set `from_state` -> `to_state` (and, with `fence`, only while that task owns the run), with
    its transition row and `also` (an Approval row, an audit event, an enqueue on commit) in the same
    transaction. False: someone else moved the run first, and nothing was written."""
    now = now or _now()
    changes = {"state": to_state, "updated_at": now, **(fields or {})}
    matching = HealingRun.objects.filter(pk=run.pk, state=from_state)
    if fence is not None:
        matching = matching.filter(task_id=fence)
    with transaction.atomic():
        if not matching.update(**changes):
            return False
        HealingRunTransition.objects.create(
            run_id=run.pk,
            from_state=from_state,
            to_state=to_state,
            reason=text(reason, REASON_CHARS),
            actor=actor_label[:200],
            created_at=now,
        )
        if also is not None:
            also()
        if to_state in HealingRun.FINAL_STATES:
            _count_on_commit(run.action.name, to_state)
            # The error learning hears of a run's result here, in the transaction that ended it: exactly once.
            learning.fold_run(run, to_state, changes.get("finished_at") or now)
        _changed_on_commit(
            run.pk, run.action.name, run.service, from_state, to_state, text(reason, REASON_CHARS)
        )
    for name, value in changes.items():
        setattr(run, name, value)
    return True


def _count_on_commit(action: str, result: str) -> None:
    transaction.on_commit(lambda: metrics.healing_runs_total.labels(action=action, result=result).inc())


# --- telling the rooms above (signals.py) ------------------------------------------------------------------------


def _changed_on_commit(
    run_id: int, action: str, service: str, from_state: str, to_state: str, why: str
) -> None:
    transaction.on_commit(lambda: _announce_run(run_id, action, service, from_state, to_state, why))


def _announce_run(run_id: int, action: str, service: str, from_state: str, to_state: str, why: str) -> None:
    """run_changed, with send_robust: a receiver's error (the escalation queue's) is logged, never the run's."""
    answers = signals.run_changed.send_robust(
        sender=HealingRun,
        run_id=run_id,
        action=action,
        service=service,
        from_state=str(from_state),  # plain strings, never the model's enum: receivers store them as JSON
        to_state=str(to_state),
        state_reason=why,
    )
    _log_failures("run_changed", f"run {run_id}", answers)


def _announce_hold(hold_id: int, action: str, service: str) -> None:
    answers = signals.hold_placed.send_robust(
        sender=HealingHold, hold_id=hold_id, action=action, service=service
    )
    _log_failures("hold_placed", f"hold {hold_id}", answers)


def _log_failures(signal: str, what: str, answers: list[tuple[Any, Any]]) -> None:
    for receiver, answer in answers:
        if isinstance(answer, Exception):
            log.error("%s receiver %r failed for %s: %r", signal, receiver, what, answer)
