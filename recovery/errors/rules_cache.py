"""The classification rules in force, cached per process.

Rules change rarely and are read on every error, so each process keeps a compiled copy for
RULES_CACHE_SECONDS (default 5 s): an edit in the admin or the API is in force everywhere within that time,
and at once in the process that made it (signals.py clears the copy on save and delete).
"""

from __future__ import annotations

import re
import threading
import time
from typing import TypedDict

from core.infra.conf import rebound
from recovery.errors.classification import Rule
from recovery.errors.models import ClassificationRule

_lock = threading.Lock()


class _Cache(TypedDict):
    expires: float  # time.monotonic() after which the rules are read again
    rules: tuple[Rule, ...]


_state: _Cache = {"expires": 0.0, "rules": ()}


def compile_rule(row: ClassificationRule) -> Rule:
    return Rule(
        id=row.pk,
        name=row.name,
        priority=row.priority,
        type_names=frozenset(t.strip().lower() for t in row.type_names if t.strip()),
        status_min=row.status_min,
        status_max=row.status_max,
        message_regex=re.compile(row.message_regex, re.IGNORECASE) if row.message_regex else None,
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
    rows = ClassificationRule.objects.filter(enabled=True).order_by("priority", "id")
    rules = tuple(compile_rule(row) for row in rows)
    with _lock:
        _state["rules"] = rules
        _state["expires"] = now + rebound("RULES_CACHE_SECONDS")
    return rules


def invalidate() -> None:
    with _lock:
        _state["expires"] = 0.0


def on_rule_change(sender: object, **_: object) -> None:
    """Receiver of a ClassificationRule's post_save and post_delete (connected in RecoveryConfig.ready())."""
    invalidate()
