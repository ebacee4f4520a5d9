"""Writes of the remediation rules: the evaluation that fires them, and the rules' audited edits.

Once per event. An evaluation reads the events it has not seen yet (check transitions, breaker transitions;
a cursor per stream) and, for pattern_count rules, counts the service's recent errors. Each (rule, event) that
matches is first a RuleFiring row, unique on (rule, event_key): whoever inserts it, and only they, ask for
the run. A second evaluator, a redelivered task or an event read again all find the row and do nothing.

The run is asked for after the insert, outside any transaction (healing.actions.services.request_run takes
its own locks and enqueues on commit), and its answer is stored on the firing: created, joined (an open run
of the same action and target), skipped (cooldown, hourly limit), refused (critical actions are never started
by a rule), invalid (the parameters no longer fit the action's schema). The approval policy is request_run's:
a rule's medium-risk run waits for an operator like anyone's.

Late commits. Ids are taken when a row is inserted, not when it commits, so a transition may become visible
after one with a higher id. The cursor therefore stays behind the last SETTLE_S seconds of events: those are
read again on every evaluation (the firings already made are found in one query), and a transition that
commits late is still seen.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.core.exceptions import PermissionDenied
from django.db import IntegrityError, transaction
from django.utils import timezone

from core.api.errors import DATABASE_UNAVAILABLE, DomainError, Forbidden, InvalidInput
from core.audit.models import AuditEvent
from core.audit.services import Actor, audited_save
from healing.actions import params
from healing.actions import services as action_services
from healing.actions.models import HealingAction, HealingRun, Risk
from healing.actions.policy import Refused
from healing.remediation import metrics, selectors
from healing.remediation.models import RemediationRule, RuleCursor, RuleFiring
from recovery.breakers import selectors as breaker_selectors
from recovery.errors import selectors as error_selectors
from recovery.errors.taxonomy import ErrorClass

log = logging.getLogger(__name__)

Trigger = RemediationRule.Trigger

CHECK_STREAM = "check_transitions"
BREAKER_STREAM = "breaker_transitions"
BATCH = 500
# At most this many batches a stream per evaluation: a backlog is caught up over a few beats, not in one task
# that outlives its time limit.
MAX_BATCHES = 20
# The cursor stays this far behind the newest events (see the module's note on late commits).
SETTLE_S = 120
# A firing still without an outcome this long after it was made lost its evaluator (killed between the insert
# and the request): the next evaluation asks for its run once more.
STALE_FIRING_S = 300
RETRYING = "requesting again: the evaluator that fired it stopped before recording an outcome"

OUTCOME_MAX = RuleFiring._meta.get_field("outcome").max_length or 200
SYSTEM = Actor(source=AuditEvent.Source.SYSTEM)

RULE_FIELDS = [
    "name",
    "description",
    "enabled",
    "trigger",
    "health_check",
    "service",
    "error_class",
    "threshold",
    "window_s",
    "action",
    "parameters",
]


# --- evaluation --------------------------------------------------------------------------------------------


def evaluate(now: datetime | None = None) -> int:
    """Fire every enabled rule whose event happened since the last evaluation; returns how many firings were
    made (each one a RuleFiring row, whatever its outcome). Safe to run in several processes at once."""
    now = now or timezone.now()
    _retry_stale_firings(now)
    fired = 0
    for stream in STREAMS:
        fired += _evaluate_stream(stream, now)
    fired += _evaluate_patterns(now)
    return fired


@dataclass(frozen=True)
class Event:
    """One event of a stream, as the rules see it."""

    id: int
    key: str  # the firing's event_key
    subject: int | str  # what rules are keyed on: a check's id, a service's name
    fires: bool  # a turn to unhealthy, a breaker opening
    recovers: bool  # a turn back to healthy, a breaker closing
    created_at: datetime
    detail: str


@dataclass(frozen=True)
class Stream:
    name: str  # the RuleCursor's stream
    trigger: str
    read: Callable[[int, int], list[Event]]  # (after_id, limit) -> events in id order
    last_id: Callable[[], int]  # where a new cursor starts
    subject_of: Callable[[RemediationRule], int | str | None]


def _check_events(after_id: int, limit: int) -> list[Event]:
    return [
        Event(
            id=row.pk,
            key=f"check_transition:{row.pk}",
            subject=row.health_check_id,
            fires=row.to_state == "unhealthy",
            recovers=row.to_state == "healthy",
            created_at=row.created_at,
            detail=f"health check {row.health_check.name} turned {row.to_state} (from {row.from_state}): "
            f"{row.reason}",
        )
        for row in selectors.check_transitions_after(after_id, limit)
    ]


def _breaker_events(after_id: int, limit: int) -> list[Event]:
    # "open" only: an operator's forced_open is a human decision already taken, not a failure to heal.
    return [
        Event(
            id=row.pk,
            key=f"breaker_transition:{row.pk}",
            subject=row.service.name,
            fires=row.to_state == "open",
            recovers=row.to_state == "closed",
            created_at=row.created_at,
            detail=f"breaker of {row.service.name} went {row.to_state} (from {row.from_state}): {row.reason}",
        )
        for row in breaker_selectors.transitions_after(after_id, limit)
    ]


STREAMS = (
    Stream(
        name=CHECK_STREAM,
        trigger=Trigger.CHECK_UNHEALTHY,
        read=_check_events,
        last_id=selectors.last_check_transition_id,
        subject_of=lambda rule: rule.health_check_id,
    ),
    Stream(
        name=BREAKER_STREAM,
        trigger=Trigger.BREAKER_OPEN,
        read=_breaker_events,
        last_id=breaker_selectors.last_transition_id,
        subject_of=lambda rule: rule.service or None,
    ),
)


def _evaluate_stream(stream: Stream, now: datetime) -> int:
    start = _cursor(stream)
    events: list[Event] = []
    position = start
    for _ in range(MAX_BATCHES):
        batch = stream.read(position, BATCH)
        events.extend(batch)
        if len(batch) < BATCH:
            break
        position = batch[-1].id
    if not events:
        return 0
    fired = _fire_events(stream, events, now)
    _advance(stream.name, start, _settled(events, start, now - timedelta(seconds=SETTLE_S)), now)
    return fired


def _cursor(stream: Stream) -> int:
    """The stream's cursor; a stream read for the first time starts after the events already written, so a
    new deployment does not act on history."""
    position = selectors.cursor_position(stream.name)
    if position is None:
        # Unique on stream: two first evaluations at once make one row, and both read its position.
        cursor, _ = RuleCursor.objects.get_or_create(
            stream=stream.name, defaults={"last_id": stream.last_id()}
        )
        position = cursor.last_id
    return position


def _settled(events: list[Event], start: int, horizon: datetime) -> int:
    """The last id before the first event younger than the horizon: where the cursor may move to."""
    settled = start
    for event in events:
        if event.created_at > horizon:
            break
        settled = event.id
    return settled


def _advance(stream: str, old: int, new: int, now: datetime) -> None:
    if new <= old:
        return
    # Compare-and-set: zero rows means another evaluator moved the cursor first; the firings are unique
    # either way, and the cursor only ever moves forward.
    RuleCursor.objects.filter(stream=stream, last_id=old).update(last_id=new, updated_at=now)


def _fire_events(stream: Stream, events: list[Event], now: datetime) -> int:
    by_subject: dict[int | str, list[RemediationRule]] = {}
    for rule in selectors.enabled_rules(stream.trigger):
        subject = stream.subject_of(rule)
        if subject is not None:
            by_subject.setdefault(subject, []).append(rule)
    candidates = [
        (rule, event) for event in events if event.fires for rule in by_subject.get(event.subject, ())
    ]
    if not candidates:
        return 0
    done = selectors.fired_keys({rule.pk for rule, _ in candidates}, {event.key for _, event in candidates})
    # The last recovery of each subject in what was read: an event followed by one is no longer true.
    recovered: dict[int | str, Event] = {}
    for event in events:
        if event.recovers:
            recovered[event.subject] = event
    fired = 0
    for rule, event in candidates:
        if (rule.pk, event.key) in done:
            continue
        later = recovered.get(event.subject)
        skip = ""
        if later is not None and later.id > event.id:
            skip = f"not requested: recovered before the rule was evaluated ({later.key})"
        fired += _fire(rule, event.key, event.detail, now, skip=skip)
    return fired


def _evaluate_patterns(now: datetime) -> int:
    rules = selectors.enabled_rules(Trigger.PATTERN_COUNT)
    keys = {rule.pk: pattern_key(rule, now) for rule in rules}
    done = selectors.fired_keys(set(keys), set(keys.values()))
    fired = 0
    for rule in rules:
        key = keys[rule.pk]
        if (rule.pk, key) in done:
            continue  # fired in this window already: no count needed
        count = error_selectors.error_count(
            service=rule.service,
            since=now - timedelta(seconds=rule.window_s),
            error_class=rule.error_class,
            at_most=rule.threshold,
        )
        if count < rule.threshold:
            continue
        what = f"{rule.error_class} errors" if rule.error_class else "errors"
        detail = f"at least {rule.threshold} {what} from {rule.service} in the last {rule.window_s} s"
        fired += _fire(rule, key, detail, now)
    return fired


def pattern_key(rule: RemediationRule, now: datetime) -> str:
    """The event of a pattern_count rule: its window of time (windows of window_s seconds since the epoch), so
    a rule fires at most once a window however long the errors go on."""
    return f"pattern:{rule.window_s}:{int(now.timestamp()) // rule.window_s}"


# --- one firing --------------------------------------------------------------------------------------------


def _fire(rule: RemediationRule, key: str, detail: str, now: datetime, *, skip: str = "") -> int:
    """Insert the firing; only its inserter asks for the run, then records the answer. 1 if fired here."""
    firing = _claim(rule, key, detail, now)
    if firing is None:
        return 0
    if skip:
        _settle(firing, None, skip)
    else:
        _settle(firing, *_request(rule, detail))
    return 1


def _claim(rule: RemediationRule, key: str, detail: str, now: datetime) -> RuleFiring | None:
    try:
        # A savepoint (or, outside a transaction, one short commit): the unique row is the claim.
        with transaction.atomic():
            return RuleFiring.objects.create(rule=rule, event_key=key, detail=detail, created_at=now)
    except IntegrityError:
        return None  # fired already, by this evaluator earlier or by another one now


def _request(rule: RemediationRule, detail: str) -> tuple[HealingRun | None, str]:
    """Ask for the rule's run, as the system on the rule's behalf; the firing's outcome says what came of it."""
    try:
        run, created = action_services.request_run(
            action=rule.action.name,
            service=rule.target(),
            parameters=rule.parameters if isinstance(rule.parameters, dict) else {},
            reason=f"remediation rule {rule.name}: {detail}",
            trigger=HealingRun.Trigger.RULE,
            actor=SYSTEM,
            requester=f"rule:{rule.name}",
        )
    except (Forbidden, PermissionDenied, Refused) as error:
        return None, f"refused: {_message(error)}"
    except InvalidInput as error:
        return None, f"invalid: {error.message}"
    except DomainError as error:
        return None, f"refused: {error.message}"
    except DATABASE_UNAVAILABLE:
        raise  # the firing stays without an outcome, and is asked for again (_retry_stale_firings)
    except Exception as error:  # one rule's failure must not keep the others from firing
        log.exception("remediation rule %s could not request its run", rule.name)
        return None, f"error: {type(error).__name__}: {error}"
    if run.state == HealingRun.State.SKIPPED:
        return run, f"skipped: {run.state_reason or 'cooldown'}"
    return run, "created" if created else "joined"


def _message(error: Exception) -> str:
    return str(getattr(error, "message", "") or error or "not allowed")


def _settle(firing: RuleFiring, run: HealingRun | None, outcome: str) -> None:
    outcome = outcome[:OUTCOME_MAX]
    RuleFiring.objects.filter(pk=firing.pk).update(run=run, outcome=outcome)
    firing.run, firing.outcome = run, outcome
    metrics.remediation_firings_total.labels(rule=firing.rule.name, outcome=outcome_kind(outcome)).inc()


def outcome_kind(outcome: str) -> str:
    """The outcome's first word (created, joined, skipped, refused, invalid, not_requested, error)."""
    head = outcome.split(":", 1)[0].strip()
    return head.replace(" ", "_") or "pending"


def _retry_stale_firings(now: datetime) -> None:
    """Firings whose evaluator died between the insert and the request: claimed (compare-and-set on the empty
    outcome, so one evaluator retries each) and asked for once more. The action's own guards stand between
    a retry and a second execution: an open run is joined, a finished one's cooldown skips."""
    stale = list(
        RuleFiring.objects.select_related("rule__action", "rule__health_check")
        .filter(outcome="", run__isnull=True, created_at__lt=now - timedelta(seconds=STALE_FIRING_S))
        .order_by("id")[:100]
    )
    for firing in stale:
        if not RuleFiring.objects.filter(pk=firing.pk, outcome="").update(outcome=RETRYING):
            continue
        if not firing.rule.enabled:
            _settle(firing, None, "not requested: the rule was disabled before its run was asked for")
            continue
        _settle(firing, *_request(firing.rule, firing.detail))


# --- the rules: audited edits ------------------------------------------------------------------------------


def rule_problems(rule: RemediationRule) -> list[dict[str, str]]:
    """What is wrong with a rule, each naming its field (the admin's form errors and the service's 400)."""
    problems: list[dict[str, str]] = []

    def problem(field: str, message: str) -> None:
        problems.append({"field": field, "message": message})

    if rule.trigger == Trigger.CHECK_UNHEALTHY and rule.health_check_id is None:
        problem("health_check", "A check_unhealthy rule names the health check it watches.")
    if rule.trigger in (Trigger.BREAKER_OPEN, Trigger.PATTERN_COUNT) and not rule.service:
        problem("service", f"A {rule.trigger} rule names the service it watches.")
    if rule.error_class:
        if rule.trigger != Trigger.PATTERN_COUNT:
            problem("error_class", "Only pattern_count rules count errors of a class; leave it blank.")
        elif rule.error_class not in ErrorClass.values:
            problem("error_class", f"Unknown error class; one of: {', '.join(ErrorClass.values)}.")
    action = rule.action if rule.action_id is not None else None
    if action is not None and action.risk == Risk.CRITICAL:
        problem("action", "Critical actions are never started by a rule; an operator asks for them.")
    problems.extend(parameter_problems(action, rule.parameters))
    return problems


def parameter_problems(action: HealingAction | None, parameters: Any) -> list[dict[str, str]]:
    """The rule's parameters must be a JSON object the action's parameters schema accepts."""
    if not isinstance(parameters, dict):
        return [{"field": "parameters", "message": "Must be a JSON object."}]
    if action is None:
        return []
    try:
        params.validate(action.parameters_schema or {}, parameters)
    except InvalidInput as error:
        # On the rule's one parameters field, each message saying where inside it (parameters.limit: ...).
        found = error.errors or [{"field": "parameters", "message": error.message}]
        return [
            {
                "field": "parameters",
                "message": item["message"]
                if item.get("field") in (None, "", "parameters")
                else f"{item['field']}: {item['message']}",
            }
            for item in found
        ]
    return []


def _check_rule(rule: RemediationRule) -> None:
    problems = rule_problems(rule)
    if problems:
        summary = "; ".join(f"{p['field']}: {p['message']}" for p in problems)
        raise InvalidInput(f"Invalid rule: {summary}", errors=problems)


def create_rule(*, data: dict[str, Any], actor: Actor, reason: str) -> RemediationRule:
    rule = RemediationRule(**{key: value for key, value in data.items() if key in RULE_FIELDS})
    _check_rule(rule)
    return audited_save(rule, RULE_FIELDS, actor=actor, reason=reason, action="remediation_rule")


def update_rule(*, rule_id: int, data: dict[str, Any], actor: Actor, reason: str) -> RemediationRule:
    rule = RemediationRule.objects.get(pk=rule_id)
    for key, value in data.items():
        if key in RULE_FIELDS:
            setattr(rule, key, value)
    _check_rule(rule)
    return audited_save(rule, RULE_FIELDS, actor=actor, reason=reason, action="remediation_rule")
