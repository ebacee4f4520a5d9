"""The classifier: an error report plus the rules in force gives a verdict. Pure functions, no I/O.

Rules are data (ClassificationRule rows); this module only knows how to match them. Every criterion a rule
sets must hold; rules are tried by priority and the first match wins. An error no rule matches is
`internal`, `medium`.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

from recovery.errors.taxonomy import ErrorClass, ErrorKind, Severity


@dataclass(frozen=True)
class ErrorReport:
    service: str = ""
    operation: str = ""
    type_name: str = ""
    message: str = ""
    status_code: int | None = None
    retry_after_s: float | None = None
    context: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Rule:
    id: int | None
    name: str
    priority: int
    type_names: frozenset[str]
    status_min: int | None
    status_max: int | None
    message_regex: re.Pattern[str] | None
    service: str
    error_class: str
    severity: str
    kind: str
    retryable: bool
    counts_toward_breaker: bool
    needs_human: bool


@dataclass(frozen=True)
class Verdict:
    error_class: str
    severity: str
    kind: str
    retryable: bool
    counts_toward_breaker: bool
    needs_human: bool
    rule: Rule | None
    why: tuple[str, ...]


UNMATCHED = Verdict(
    error_class=ErrorClass.INTERNAL,
    severity=Severity.MEDIUM,
    kind=ErrorKind.UNKNOWN,
    retryable=False,
    # An unknown failure still says something about the service's health: count it, conservatively.
    counts_toward_breaker=True,
    needs_human=False,
    rule=None,
    why=("no rule matched: an unmatched error is internal, medium",),
)


def type_candidates(type_name: str) -> set[str]:
    """`httpx.ConnectTimeout` matches a rule naming `ConnectTimeout` or the full dotted name."""
    name = type_name.strip().lower()
    if not name:
        return set()
    return {name, name.rsplit(".", 1)[-1]}


def match(rule: Rule, report: ErrorReport, types: set[str]) -> tuple[str, ...] | None:
    """The reasons a rule matches the report, or None when one of its criteria does not hold."""
    why: list[str] = []
    if rule.service:
        if report.service != rule.service:
            return None
        why.append(f"service is {rule.service!r}")
    if rule.type_names:
        hit = types & rule.type_names
        if not hit:
            return None
        why.append(f"type {report.type_name!r} is one of the rule's types")
    if rule.status_min is not None or rule.status_max is not None:
        low, high = rule.status_min or 0, rule.status_max or 999
        if report.status_code is None or not low <= report.status_code <= high:
            return None
        why.append(f"status {report.status_code} is within {low}-{high}")
    if rule.message_regex is not None:
        found = rule.message_regex.search(report.message)
        if found is None:
            return None
        why.append(f"message contains {found.group(0)!r} (/{rule.message_regex.pattern}/)")
    return tuple(why)


def classify(report: ErrorReport, rules: tuple[Rule, ...]) -> Verdict:
    types = type_candidates(report.type_name)
    for rule in rules:
        why = match(rule, report, types)
        if why is not None:
            return Verdict(
                error_class=rule.error_class,
                severity=rule.severity,
                kind=rule.kind,
                retryable=rule.retryable,
                counts_toward_breaker=rule.counts_toward_breaker,
                needs_human=rule.needs_human,
                rule=rule,
                why=(f"rule {rule.name!r} (priority {rule.priority}) matched", *why),
            )
    return UNMATCHED


# --- Retry-After -----------------------------------------------------------------------------------------


def parse_retry_after(value: Any, now: datetime | None = None) -> float | None:
    """Seconds from `Retry-After`: a number of seconds or an HTTP date. Raises ValueError if it is neither."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise ValueError("must be seconds or an HTTP date")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        text = str(value).strip()
        try:
            seconds = float(text)
        except ValueError:
            try:
                when = parsedate_to_datetime(text)
            except (TypeError, ValueError, IndexError) as error:
                raise ValueError("must be seconds or an HTTP date") from error
            if when.tzinfo is None:
                when = when.replace(tzinfo=UTC)
            seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if seconds != seconds or seconds in (float("inf"), float("-inf")):
        raise ValueError("must be a finite number of seconds")
    return max(0.0, round(seconds, 3))


def retry_after_from_headers(headers: dict[str, str]) -> float | None:
    """A `Retry-After` header from the failed call, if present and readable (the remote's, so never fatal)."""
    for name, value in headers.items():
        if name.lower() == "retry-after":
            try:
                return parse_retry_after(value)
            except ValueError:
                return None
    return None


# --- Fingerprints ----------------------------------------------------------------------------------------

_MASKS = [
    (re.compile(r"'[^']*'|\"[^\"]*\"|`[^`]*`"), "<str>"),
    (re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", re.I), "<uuid>"),
    (re.compile(r"\b0x[0-9a-f]+\b", re.I), "<hex>"),
    (re.compile(r"\b(?=[0-9a-f]*[0-9])(?=[0-9a-f]*[a-f])[0-9a-f]{8,}\b", re.I), "<hex>"),
    (re.compile(r"\b[\w.+-]+@[\w-]+\.[\w.-]+\b"), "<email>"),
    (re.compile(r"\d+(?:\.\d+)?"), "<n>"),
]


def message_template(message: str) -> str:
    """The message with its variable parts masked: quoted values, UUIDs, hex, e-mail addresses, numbers."""
    text = message[:2000]
    for pattern, mask in _MASKS:
        text = pattern.sub(mask, text)
    return " ".join(text.split())


def fingerprint(report: ErrorReport, error_class: str, template: str) -> str:
    parts = [report.service, report.operation, error_class, report.type_name.strip().lower(), template]
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:40]
