"""Writes of the health checks: the checks themselves (operators; audited), every result and the state it moves
the check to, the dispatcher's claims of due runs, and the purge of old results.

Recording a result is a read-modify-write of the check's counters: the check's row is locked (select_for_update)
in the transaction that inserts the result, moves the counters and the state, and writes the transition, so
that two results arriving at once are counted one after the other. A scheduled result is unique per (check,
due_at): a second delivery of the same due run finds the first one's row and changes nothing.

Nothing here does network I/O inside a transaction: probes run before the recording's transaction, and what a
transition sets off (the breaker's verdict, the state_changed signal) runs once it is committed.

Scheduling: `dispatch_due` (beat, every second) claims each due check by compare-and-set on `next_due_at`,
moving it to the following due time; only the process whose update won sends the run, one Celery task per run.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from celery import current_app
from django.db import IntegrityError, connection, transaction
from django.db.models import OuterRef, Subquery
from django.utils import timezone

from core.api.errors import Conflict, InvalidInput, NotFound
from core.audit import services as audit
from core.audit.services import Actor
from core.infra.conf import rebound
from healing.checks import metrics, probes, signals, states
from healing.checks.models import HealthCheck, HealthCheckResult, HealthCheckTransition
from healing.checks.probes import Outcome
from recovery.breakers import services as breaker_services
from recovery.calls import outbound

log = logging.getLogger(__name__)

Kind = HealthCheck.Kind
State = HealthCheck.State
Source = HealthCheckResult.Source

# The run's task (tasks.py), sent by name: services never import tasks.py, which imports them.
RUN_CHECK_TASK = "healing.checks.tasks.run_check"
# A run's Celery time limits, past its own timeout: the probe bounds itself; these catch what hangs anyway.
SOFT_LIMIT_MARGIN_S = 10.0
HARD_LIMIT_MARGIN_S = 20.0
PURGE_BATCH = 5000
PURGE_MAX_BATCHES = 200  # a run deletes at most a million rows; the next hour's run takes the rest
AUDIT_ACTION = "health_check"

# What an operator sets; everything else (state, counters, schedule) is Rebound's.
# How far ahead the dispatcher claims: two of its periods (beat sends it every second; config/settings/base.py),
# so that a run is sent before it is due even when a pass itself takes most of a second.
DISPATCH_LOOKAHEAD_S = 2.0

CONFIG_FIELDS = [
    "name",
    "service",
    "kind",
    "description",
    "interval_s",
    "timeout_s",
    "rise",
    "fall",
    "enabled",
    "drives_breaker",
    "method",
    "url",
    "expected_status",
    "body_contains",
    "host",
    "port",
    "queue",
    "grace_s",
]
# The fields particular to each kind, their defaults (which the other kinds keep), and those a kind needs.
KIND_FIELDS: dict[str, tuple[str, ...]] = {
    Kind.HTTP: ("method", "url", "expected_status", "body_contains"),
    Kind.TCP: ("host", "port"),
    Kind.CELERY: ("queue",),
    Kind.HEARTBEAT: ("grace_s",),
}
KIND_DEFAULTS: dict[str, Any] = {
    "method": "GET",
    "url": "",
    "expected_status": [],
    "body_contains": "",
    "host": "",
    "port": None,
    "queue": "",
    "grace_s": 0.0,
}
REQUIRED: dict[str, tuple[str, ...]] = {
    Kind.HTTP: ("url",),
    Kind.TCP: ("host", "port"),
    Kind.CELERY: ("queue",),
    Kind.HEARTBEAT: (),
}
PROBED = frozenset({Kind.HTTP.value, Kind.TCP.value, Kind.CELERY.value})


def _owner(field: str) -> str:
    return next(kind for kind, fields in KIND_FIELDS.items() if field in fields)


# --- validation ------------------------------------------------------------------------------------------


def _kind_problems(check: HealthCheck, given: set[str]) -> list[dict[str, str]]:
    """What is wrong with the check for its kind; the other kinds' fields are reset to their defaults (a field
    of another kind that the request itself sets is refused, naming it: it would silently do nothing)."""
    kind = check.kind
    if kind not in KIND_FIELDS:
        return [{"field": "kind", "message": f"must be one of {', '.join(KIND_FIELDS)}"}]
    problems = []
    for field, default in KIND_DEFAULTS.items():
        if field in KIND_FIELDS[kind]:
            continue
        if field in given and getattr(check, field) not in (default, None, "", []):
            problems.append(
                {"field": field, "message": f"{field} is for {_owner(field)} checks; this is a {kind} check"}
            )
        setattr(check, field, default)
    for field in REQUIRED[kind]:
        if getattr(check, field) in (None, ""):
            problems.append({"field": field, "message": f"a {kind} check needs {field}"})
    if problems:
        return problems
    if kind == Kind.HTTP:
        problems += _http_problems(check)
    elif kind == Kind.TCP:
        try:
            probes.tcp_url(check.host, int(check.port or 0))
        except probes.TargetRefused as error:
            problems.append({"field": "host", "message": str(error)})
    numbers = isinstance(check.timeout_s, int | float) and isinstance(check.interval_s, int | float)
    if kind in PROBED and numbers and check.timeout_s > check.interval_s:  # else full_clean names them
        problems.append(
            {
                "field": "timeout_s",
                "message": f"must not exceed interval_s ({check.interval_s:g}): one run ends "
                "before the next is due",
            }
        )
    return problems


def _http_problems(check: HealthCheck) -> list[dict[str, str]]:
    problems = []
    check.method = (check.method or "GET").upper()
    if check.method not in outbound.METHODS:
        problems.append({"field": "method", "message": f"must be one of {', '.join(outbound.METHODS)}"})
    try:
        outbound.check_url(check.url)
    except outbound.UrlRefused as error:
        problems.append({"field": "url", "message": str(error)})
    expected = check.expected_status
    if not isinstance(expected, list) or not all(
        isinstance(code, int) and not isinstance(code, bool) and 100 <= code <= 599 for code in expected
    ):
        problems.append(
            {"field": "expected_status", "message": "a list of HTTP status codes from 100 to 599"}
        )
    elif len(expected) > 100:
        problems.append({"field": "expected_status", "message": "at most 100 status codes"})
    else:
        check.expected_status = list(dict.fromkeys(expected))
    return problems


def _validate(check: HealthCheck, given: set[str]) -> None:
    """Every problem at once, each naming its field: the kind's rules, then the model's own."""
    problems = _kind_problems(check, given)
    try:
        audit.full_clean(check)
    except InvalidInput as error:
        problems += [e for e in error.errors if e not in problems]
    if problems:
        summary = "; ".join(f"{e['field']}: {e['message']}" for e in problems[:5])
        raise InvalidInput(f"Invalid input: {summary}", errors=problems)


def _first_due(check: HealthCheck, now: datetime) -> datetime:
    """When a new or edited check runs: now, or for a heartbeat check the end of its first silence window."""
    if check.kind == Kind.HEARTBEAT:
        return (check.last_ping_at or now) + timedelta(seconds=probes.window_s(check))
    return now


@contextmanager
def _name_taken_is_a_conflict(name: str) -> Iterator[None]:
    # full_clean() checked the name is free; another request may have taken it since (unique in the database).
    try:
        yield
    except IntegrityError as error:
        raise Conflict(f"A health check named {name!r} was created meanwhile.", field="name") from error


# --- the checks themselves (operators) ---------------------------------------------------------------------


def create_check(*, data: dict[str, Any], actor: Actor, reason: str) -> HealthCheck:
    """A new check (audited); it runs at once (a heartbeat check waits for its first window)."""
    reason = audit.require_reason(reason)
    check = HealthCheck(**{k: v for k, v in data.items() if k in CONFIG_FIELDS})
    _validate(check, set(data))
    check.next_due_at = _first_due(check, timezone.now())
    with _name_taken_is_a_conflict(check.name), transaction.atomic():
        check.save()
        audit.record(
            actor,
            f"{AUDIT_ACTION}.create",
            check,
            reason=reason,
            after=audit.snapshot(check, CONFIG_FIELDS),
        )
    _publish_state(check)
    return check


def update_check(*, check_id: int, data: dict[str, Any], actor: Actor, reason: str) -> HealthCheck:
    """Change a check's settings (audited); it runs again soon. Its state and results stay. No change: nothing
    is written, nothing audited."""
    reason = audit.require_reason(reason)
    with _name_taken_is_a_conflict(str(data.get("name", ""))), transaction.atomic():
        # Locked: a result being recorded meanwhile must not be overwritten by this save, nor this by it.
        check = HealthCheck.objects.select_for_update().filter(pk=check_id).first()
        if check is None:
            raise NotFound("The health check was deleted meanwhile.", field="name")
        before = audit.snapshot(check, CONFIG_FIELDS)
        for key, value in data.items():
            if key in CONFIG_FIELDS:
                setattr(check, key, value)
        _validate(check, set(data))
        after = audit.snapshot(check, CONFIG_FIELDS)
        if after == before:
            return check
        check.next_due_at = _first_due(check, timezone.now())
        check.save(update_fields=[*CONFIG_FIELDS, "next_due_at", "updated_at"])
        audit.record(actor, f"{AUDIT_ACTION}.update", check, reason=reason, before=before, after=after)
        if (
            before.get("drives_breaker")
            and before.get("enabled")
            and not (check.enabled and check.drives_breaker)
        ):
            _release_on_commit(
                HealthCheck(
                    name=check.name, service=before["service"], drives_breaker=True, state=check.state
                ),
                f"health check {check.name} no longer watches: {reason}",
            )
    return check


def delete_check(*, check_id: int, actor: Actor, reason: str) -> None:
    """Delete a check with its results and transitions (audited)."""
    reason = audit.require_reason(reason)
    with transaction.atomic():
        check = HealthCheck.objects.select_for_update().filter(pk=check_id).first()
        if check is None:
            raise NotFound("The health check was deleted meanwhile.", field="name")
        audit.record(
            actor, f"{AUDIT_ACTION}.delete", check, reason=reason, before=audit.snapshot(check, CONFIG_FIELDS)
        )
        if check.enabled:
            _release_on_commit(check, f"health check {check.name} deleted: {reason}")
        # Its transitions, then its results in one statement each: a busy check has hundreds of thousands of
        # results, which the ORM's cascade would load to set the transitions' result to NULL one batch at a time.
        HealthCheckTransition.objects.filter(health_check_id=check_id).delete()
        with connection.cursor() as cursor:
            cursor.execute(
                f"DELETE FROM {HealthCheckResult._meta.db_table} WHERE health_check_id = %s",
                [check_id],
            )
        check.delete()


# --- recording results -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Recorded:
    """A result as recorded, the check after it, and the transition it caused (if any)."""

    result: HealthCheckResult
    check: HealthCheck
    transition: HealthCheckTransition | None


def _transition_reason(moved: states.Step, outcome: Outcome) -> str:
    if moved.state == State.HEALTHY:
        return f"passed {moved.consecutive_passes} checks"
    return f"failed {moved.consecutive_failures} checks in a row: {outcome.error or 'failed'}"


def record(
    check_id: int,
    outcome: Outcome | None,
    *,
    source: str,
    due_at: datetime | None = None,
    started_at: datetime | None = None,
    ping: bool = False,
) -> Recorded | None:
    """Record one result and move the check's counters and state, all under the check's row lock.

    None when nothing was recorded: the check is gone, the due run was recorded already (a second delivery), or
    (`outcome` None: a heartbeat's silence) a ping came after the run was claimed.
    """
    now = timezone.now()
    with transaction.atomic():
        check = HealthCheck.objects.select_for_update().filter(pk=check_id).first()
        if check is None:
            return None
        if (
            due_at is not None
            and HealthCheckResult.objects.filter(health_check=check, due_at=due_at).exists()
        ):
            return None
        if outcome is None:
            outcome = _silence(check, due_at or now)
            if outcome is None:
                return None
        result = HealthCheckResult.objects.create(
            health_check=check,
            ok=outcome.ok,
            latency_ms=outcome.latency_ms,
            status_code=outcome.status_code,
            error=outcome.error,
            source=source,
            due_at=due_at,
            started_at=started_at or now,
            created_at=now,
        )
        moved = states.step(
            check.state,
            check.consecutive_passes,
            check.consecutive_failures,
            outcome.ok,
            rise=check.rise,
            fall=check.fall,
        )
        changes: dict[str, Any] = {
            "state": moved.state,
            "consecutive_passes": moved.consecutive_passes,
            "consecutive_failures": moved.consecutive_failures,
        }
        if ping:
            # The next silence is due one window after this ping: the dispatcher's claim waits for it.
            changes["last_ping_at"] = now
            changes["next_due_at"] = now + timedelta(seconds=probes.window_s(check))
        transition = None
        if moved.changed:
            changes["state_changed_at"] = now
            transition = HealthCheckTransition.objects.create(
                health_check=check,
                from_state=check.state,
                to_state=moved.state,
                reason=_transition_reason(moved, outcome),
                result=result,
                created_at=now,
            )
        # `updated_at` is the settings' (auto_now on save); a result moves only these.
        HealthCheck.objects.filter(pk=check.pk).update(**changes)
        for name, value in changes.items():
            setattr(check, name, value)
        transaction.on_commit(lambda: _after_record(check, transition.pk if transition else None, outcome))
    return Recorded(result, check, transition)


def _silence(check: HealthCheck, due_at: datetime) -> Outcome | None:
    """A heartbeat check's claimed silence: a failure, unless a ping came since the window ended (then the
    claim is stale: the ping moved the next due time, and its own result is the newer word)."""
    last = check.last_ping_at
    if last is not None and (due_at - last).total_seconds() < probes.window_s(check):
        return None
    return Outcome(False, error=probes.silence_error(check, last))


def _after_record(check: HealthCheck, transition_id: int | None, outcome: Outcome) -> None:
    _publish_state(check)
    if transition_id is not None:
        after_transition(transition_id)
    elif check.drives_breaker and check.state == State.UNHEALTHY and not outcome.ok:
        # Still failing: say so again, so that the breaker stays held open past its cap for as long as the check
        # fails, and a verdict the breaker store could not take at the transition is applied now.
        _verdict(check, healthy=False, reason=outcome.error or "failed")


def _verdict(check: HealthCheck, *, healthy: bool, reason: str) -> str:
    try:
        return breaker_services.health_verdict(
            check.service, healthy=healthy, check=check.name, reason=reason
        )
    except Exception as error:  # the breaker store, the database: the check's own recording stands
        log.exception("health check %s: the verdict on %s's breaker failed", check.name, check.service)
        return f"verdict not applied: {error}"


def _release_on_commit(check: HealthCheck, why: str) -> None:
    """A check that held its service's breaker open stops watching (disabled, deleted, or no longer driving
    the breaker): let the breaker go half-open, so real trial calls decide, instead of staying held open."""
    if check.drives_breaker and check.state == State.UNHEALTHY:
        transaction.on_commit(lambda: _verdict(check, healthy=True, reason=why))


def _publish_state(check: HealthCheck) -> None:
    metrics.health_check_up.labels(check=check.name, service=check.service).set(
        metrics.UP_VALUES.get(check.state, -1)
    )


def after_transition(transition_id: int) -> None:
    """What a committed change of state sets off: the breaker's verdict (checks that drive it), recorded in the
    transition's breaker_effect, then the state_changed signal. Never raises: the result is recorded already."""
    transition = (
        HealthCheckTransition.objects.select_related("health_check", "result")
        .filter(pk=transition_id)
        .first()
    )
    if transition is None:
        return
    check = transition.health_check
    log.info(
        "health check %s (%s): %s -> %s: %s",
        check.name,
        check.service,
        transition.from_state,
        transition.to_state,
        transition.reason,
    )
    if check.drives_breaker and transition.to_state in (State.HEALTHY, State.UNHEALTHY):
        effect = _breaker_verdict(check, transition)
        # Compare-and-set: the effect is written once, by whoever applied the verdict.
        HealthCheckTransition.objects.filter(pk=transition_id, breaker_effect="").update(
            breaker_effect=effect[:200]
        )
    for receiver, answer in signals.state_changed.send_robust(
        sender=HealthCheckTransition, transition_id=transition_id
    ):
        if isinstance(answer, Exception):
            log.error(
                "state_changed receiver %r failed for transition %s: %r", receiver, transition_id, answer
            )


def _breaker_verdict(check: HealthCheck, transition: HealthCheckTransition) -> str:
    healthy = transition.to_state == State.HEALTHY
    if healthy:
        reason = transition.reason  # "passed N checks"
    else:
        reason = (transition.result.error if transition.result else "") or transition.reason
    return _verdict(check, healthy=healthy, reason=reason)


# --- running -----------------------------------------------------------------------------------------------


def _probe(check: HealthCheck) -> Outcome:
    outcome = probes.probe(check)
    if outcome.duration_s is not None:
        metrics.health_check_duration_seconds.labels(check=check.name).observe(outcome.duration_s)
    return outcome


def _heartbeat_now(check: HealthCheck, now: datetime) -> Outcome:
    last = (
        HealthCheckResult.objects.filter(health_check=check, source=Source.PING)
        .order_by("-created_at", "-id")
        .first()
    )
    return probes.heartbeat_verdict(check, last.ok if last else None, last.error if last else "", now)


def _run(check: HealthCheck, source: str, due_at: datetime | None) -> Recorded | None:
    started = timezone.now()
    outcome = _heartbeat_now(check, started) if check.kind == Kind.HEARTBEAT else _probe(check)
    return record(check.pk, outcome, source=source, due_at=due_at, started_at=started)


def run_check(check_id: int, due_at: datetime | None, source: str) -> str:
    """One run, as a worker receives it: a scheduled due run, or one asked for (verification, manual). Returns
    what happened: recorded ok/fail, duplicate (a second delivery), gone, disabled, pinged (a heartbeat's
    silence that a ping ended)."""
    check = HealthCheck.objects.filter(pk=check_id).first()
    if check is None:
        return "gone"
    if not check.enabled:
        return "disabled"
    if (
        due_at is not None
        and HealthCheckResult.objects.filter(health_check_id=check_id, due_at=due_at).exists()
    ):
        return "duplicate"  # without probing again
    if check.kind == Kind.HEARTBEAT and source == Source.SCHEDULED:
        silence = record(check_id, None, source=source, due_at=due_at or timezone.now())
        return "fail" if silence is not None else "pinged"
    recorded = _run(check, source, due_at)
    if recorded is None:
        return "duplicate"
    return "ok" if recorded.result.ok else "fail"


def run_now(*, check_id: int, actor: Actor) -> Recorded:
    """An operator's "run now": the probe runs here, its result is recorded (source manual) and answered."""
    check = HealthCheck.objects.filter(pk=check_id).first()
    if check is None:
        raise NotFound("No such health check.", field="name")
    if not check.enabled:
        raise Conflict(f"The health check {check.name!r} is disabled: enable it to run it.", field="name")
    recorded = _run(check, Source.MANUAL, None)
    if recorded is None:
        raise NotFound("The health check was deleted meanwhile.", field="name")
    audit.record(
        actor,
        f"{AUDIT_ACTION}.run",
        recorded.check,
        after={"result": recorded.result.pk, "ok": recorded.result.ok, "state": recorded.check.state},
    )
    return recorded


def ping(*, check_id: int, ok: bool, message: str, actor: Actor) -> Recorded:
    """A heartbeat check's ping: a result (ok, or a failure with the pinger's message) and the next silence
    window. Only heartbeat checks take pings, and only while enabled (409 otherwise)."""
    check = HealthCheck.objects.filter(pk=check_id).first()
    if check is None:
        raise NotFound("No such health check.", field="name")
    if check.kind != Kind.HEARTBEAT:
        raise Conflict(
            f"{check.name!r} is a {check.kind} check: only heartbeat checks take pings (Rebound runs the others).",
            field="name",
        )
    if not check.enabled:
        raise Conflict(
            f"The heartbeat check {check.name!r} is disabled: its pings are not taken.", field="name"
        )
    error = "" if ok else (message.strip() or f"the pinger ({actor.label}) reported a failure")
    recorded = record(check.pk, Outcome(ok, error=error[: probes.ERROR_CHARS]), source=Source.PING, ping=True)
    if recorded is None:
        raise NotFound("The health check was deleted meanwhile.", field="name")
    return recorded


# --- enqueueing ----------------------------------------------------------------------------------------------


def send_run(
    check_id: int,
    due_at: datetime,
    source: str,
    timeout_s: float,
    expires: datetime | None = None,
    eta: datetime | None = None,
) -> bool:
    """Publish one run (one task per run), with time limits from the check's timeout, to start at `eta` (None:
    at once). A broker failure is logged and answered False: a scheduled run is then missed, and the next one is
    due an interval later."""
    try:
        current_app.send_task(
            RUN_CHECK_TASK,
            args=[check_id, due_at.isoformat(), source],
            soft_time_limit=float(timeout_s) + SOFT_LIMIT_MARGIN_S,
            time_limit=float(timeout_s) + HARD_LIMIT_MARGIN_S,
            expires=expires,
            eta=eta,
        )
    except Exception as error:
        log.warning("could not enqueue a %s run of health check %s: %s", source, check_id, error)
        return False
    return True


def enqueue_run(check_id: int, *, source: str) -> None:
    """Run a check soon on a worker (once the caller's transaction commits): a healing run's verification, or an
    operator's run from the admin. Its result is recorded with `source` ("verification" or "manual")."""
    if source not in (Source.VERIFICATION, Source.MANUAL):
        raise ValueError(f"source must be verification or manual, not {source!r}")

    def send() -> None:
        timeout = HealthCheck.objects.filter(pk=check_id).values_list("timeout_s", flat=True).first()
        if timeout is None:
            log.warning("health check %s is gone: no %s run", check_id, source)
            return
        send_run(check_id, timezone.now(), source, timeout)

    transaction.on_commit(send)


# --- scheduling ----------------------------------------------------------------------------------------------


def dispatch_due(now: datetime | None = None, lookahead_s: float = DISPATCH_LOOKAHEAD_S) -> int:
    """Claim every enabled check due now or within `lookahead_s` (at most HEALTH_DISPATCH_BATCH, the most
    overdue first) and send one run for each, to start at its due time. The claim is a compare-and-set moving
    next_due_at from the due time read to the following one (an interval on; or an interval from now when the
    check is so late that the following one has passed too): however many dispatchers run at once, only one
    update matches, and only its process sends the run.

    Why ahead: beat sends this every second, so a check claimed only once due would wait up to a second, plus
    the pass itself, before its run is even sent (bench/health_checks.py measured a p99 lateness above the 1 s
    goal that way). Claimed one period ahead and sent with its due time as the task's ETA, a run waits on the
    worker instead, and starts on time."""
    now = now or timezone.now()
    batch = int(rebound("HEALTH_DISPATCH_BATCH"))
    horizon = now + timedelta(seconds=lookahead_s)
    due = list(
        HealthCheck.objects.filter(enabled=True, next_due_at__lte=horizon)
        .order_by("next_due_at")
        .values_list("pk", "next_due_at", "interval_s", "timeout_s")[:batch]
    )
    claims: list[tuple[int, datetime, datetime, float]] = []
    # The claims in one transaction: one commit for the pass, not one per check. A dispatcher racing this one
    # waits on the rows it claimed, then finds next_due_at moved and claims nothing. The runs are sent after
    # the commit (no broker I/O inside a transaction, and no run sent for a claim that did not hold).
    with transaction.atomic():
        for check_id, due_at, interval_s, timeout_s in due:
            assert due_at is not None  # next_due_at__lte never matches a null
            interval = timedelta(seconds=float(interval_s))
            following = due_at + interval
            if following <= now:
                following = (
                    now + interval
                )  # far behind (a stopped scheduler): one run now, not a burst of them
            if HealthCheck.objects.filter(pk=check_id, enabled=True, next_due_at=due_at).update(
                next_due_at=following
            ):
                claims.append((check_id, due_at, following, float(timeout_s)))
    sent = 0
    for check_id, due_at, following, timeout_s in claims:
        # A run still queued when the next one is due is dropped: the next one stands in for it.
        start = due_at if due_at > now else None
        if send_run(check_id, due_at, Source.SCHEDULED, timeout_s, expires=following, eta=start):
            sent += 1
    return sent


def purge_results(now: datetime | None = None) -> int:
    """Delete results older than HEALTH_RESULT_RETENTION_DAYS in batches, keeping each check's newest result
    (what its answers show as last_result). Transitions stay; their link to a purged result becomes null."""
    now = now or timezone.now()
    cutoff = now - timedelta(days=float(rebound("HEALTH_RESULT_RETENTION_DAYS")))
    newest = (
        HealthCheck.objects.annotate(
            newest=Subquery(
                HealthCheckResult.objects.filter(health_check=OuterRef("pk"))
                .order_by("-created_at", "-id")
                .values("pk")[:1]
            )
        )
        .filter(newest__isnull=False)
        .values("newest")
    )  # NOT IN with a NULL in it would match nothing
    deleted = 0
    for _ in range(PURGE_MAX_BATCHES):
        old = list(
            HealthCheckResult.objects.filter(created_at__lt=cutoff)
            .exclude(pk__in=newest)
            .values_list("pk", flat=True)[:PURGE_BATCH]
        )
        if not old:
            break
        deleted += (
            HealthCheckResult.objects.filter(pk__in=old).delete()[1].get(HealthCheckResult._meta.label, 0)
        )
        if len(old) < PURGE_BATCH:
            break
    publish_states()
    return deleted


def publish_states() -> None:
    """Set health_check_up of every check (hourly, with the purge), so a process started since shows them too."""
    for check in HealthCheck.objects.only("name", "service", "state"):
        _publish_state(check)
