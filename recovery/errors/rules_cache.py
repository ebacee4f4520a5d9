"""The classification rules in force, cached per process.

Rules change rarely and are read on every error, so each process keeps a compiled copy for
RULES_CACHE_SECONDS (default 5 s): an edit in the admin or the API is in force everywhere within that time,
and at once in the process that made it (signals.py clears the copy on save and delete).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TypedDict

from django.db import Error as DatabaseFailure

from core.infra.conf import rebound
from recovery.errors.classification import PatternError, Rule, compile_message_regex
from recovery.errors.models import ClassificationRule

log = logging.getLogger(__name__)
_lock = threading.Lock()


class _Cache(TypedDict):
    expires: float  # time.monotonic() after which the rules are read again
    rules: tuple[Rule, ...]
    loaded: bool  # read at least once by this process
    unreadable: bool  # the last read failed (told once in the log)


_state: _Cache = {"expires": 0.0, "rules": (), "loaded": False, "unreadable": False}
RETRY_WHILE_DOWN_S = 1.0


def compile_rule(row: ClassificationRule) -> Rule:
    return Rule(
        id=row.pk,
        name=row.name,
        priority=row.priority,
        type_names=frozenset(t.strip().lower() for t in row.type_names if t.strip()),
        status_min=row.status_min,
        status_max=row.status_max,
        message_regex=compile_message_regex(row.message_regex) if row.message_regex else None,
        service=row.service,
        error_class=row.error_class,
        severity=row.severity,
        kind=row.kind,
        retryable=row.retryable,
        counts_toward_breaker=row.counts_toward_breaker,
        needs_human=row.needs_human,
    )


def active_rules() -> tuple[Rule, ...]:
    now = time.monotonic()
    if now < _state["expires"]:
        return _state["rules"]
    try:
        rows = list(ClassificationRule.objects.filter(enabled=True).order_by("priority", "id"))
    except DatabaseFailure as error:
        return _rules_read_before(now, error)
    rules = tuple(rule for row in rows if (rule := _compiled_or_skipped(row)) is not None)
    with _lock:
        _state["rules"] = rules
        _state["expires"] = now + rebound("RULES_CACHE_SECONDS")
        _state["loaded"] = True
        _state["unreadable"] = False
    return rules


def _rules_read_before(now: float, error: Exception) -> tuple[Rule, ...]:
    """The database cannot be read (restarting, unreachable): classify with the rules read before, and try
    again in RETRY_WHILE_DOWN_S. The buffered intake exists to ride out exactly this; a process that never read
    the rules has nothing to classify with, and fails (503)."""
    if not _state["loaded"]:
        raise error
    with _lock:
        _state["expires"] = now + RETRY_WHILE_DOWN_S
        told = _state["unreadable"]
        _state["unreadable"] = True
    if not told:
        log.warning("classification rules cannot be read (%s); classifying with the rules read before", error)
    return _state["rules"]


def _compiled_or_skipped(row: ClassificationRule) -> Rule | None:
    """A rule stored around the validation (SQL, an older release) whose pattern RE2 cannot take is skipped,
    loudly, every time the rules are read: classification never fails for one bad row."""
    try:
        return compile_rule(row)
    except PatternError as error:
        log.error("classification rule %r (id %s) is skipped: message_regex: %s", row.name, row.pk, error)
        return None


def invalidate() -> None:
    with _lock:
        _state["expires"] = 0.0


def on_rule_change(sender: object, **_: object) -> None:
    """Receiver of a ClassificationRule's post_save and post_delete (connected in RecoveryConfig.ready())."""
    invalidate()
