"""The classifier: an error report plus the rules in force gives a verdict. Pure functions, no I/O.

Rules are data (ClassificationRule rows); this module only knows how to match them. Every criterion a rule
sets must hold; rules are tried by priority and the first match wins. An error no rule matches is
`internal`, `medium`.

An operator's message pattern runs on RE2 (google-re2), which matches in time linear in the message: a
pattern such as `(a+)+$` would hold a backtracking engine (Python's `re`) for minutes on a 30-character
message, and with it a web worker. RE2 takes no backreferences and no lookarounds; such a pattern is refused
where it is written (`compile_message_regex` raises) and skipped where it is read (rules_cache.py).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import re2

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
    # True when the API's schema already refused what the database cannot keep (ErrorIn.to_report): the
    # intake then skips its own check (recovery/errors/services.py, storable_report).
    checked: bool = field(default=False, compare=False, repr=False)


@dataclass(frozen=True)
class Rule:
    id: int | None
    name: str
    priority: int
    type_names: frozenset[str]
    status_min: int | None
    status_max: int | None
    message_regex: re2._Regexp[str] | None
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


# A rule's priority: lower is tried first. Bounded so that it fits its column (an integer) with room to spare;
# the built-in rules use 100 to 999.
PRIORITY_MIN, PRIORITY_MAX = -1_000_000, 1_000_000


class PatternError(ValueError):
    """A message pattern RE2 cannot take: the message says why, in words an operator can act on."""


def _re2_options() -> re2.Options:
    options = re2.Options()
    options.case_sensitive = False  # rules' patterns are searched case-insensitively (documented)
    options.log_errors = False  # a refused pattern is told to the operator who wrote it, not to stderr
    return options


_RE2_OPTIONS = _re2_options()


def compile_message_regex(pattern: str) -> re2._Regexp[str]:
    """A rule's message pattern compiled by RE2 (linear-time matching, case-insensitive), or PatternError."""
    try:
        return re2.compile(pattern, _RE2_OPTIONS)
    except re2.error as error:
        reason = error.args[0] if error.args else error
        text = reason.decode(errors="replace") if isinstance(reason, bytes) else str(reason)
        raise PatternError(
            f"RE2 cannot take this pattern ({text}); patterns must run in linear time, so backreferences "
            "and lookarounds are not supported"
        ) from error


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


# Agents report the same few errors over and over (a rate limit, a timeout), and the verdict depends only on the
# rules in force and four fields of the report: each process remembers the verdicts for the rules it classified
# with last (rules_cache hands out one tuple until it reloads, which starts the memo afresh). Bounded, and only
# for messages short enough to keep cheaply: a long message is classified every time.
MEMO_MAX = 2048
MEMO_MESSAGE_MAX = 512


@dataclass
class _Memo:
    rules: tuple[Rule, ...]
    verdicts: dict[tuple[str, str, int | None, str], Verdict]
    templates: dict[str, str]


_memo = _Memo((), {}, {})


def classify(report: ErrorReport, rules: tuple[Rule, ...]) -> Verdict:
    """The first rule in `rules` that matches the report, as a verdict (UNMATCHED when none does)."""
    global _memo
    if len(report.message) > MEMO_MESSAGE_MAX:
        return _classify(report, rules)
    memo = _memo
    if memo.rules is not rules:
        memo = _memo = _Memo(rules, {}, memo.templates)
    key = (report.service, report.type_name, report.status_code, report.message)
    verdict = memo.verdicts.get(key)
    if verdict is None:
        verdict = _classify(report, rules)
        if len(memo.verdicts) >= MEMO_MAX:
            memo.verdicts.clear()
        memo.verdicts[key] = verdict
    return verdict


def _classify(report: ErrorReport, rules: tuple[Rule, ...]) -> Verdict:
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
    """The message with its variable parts masked: quoted values, UUIDs, hex, e-mail addresses, numbers
    (remembered for short messages, as verdicts are: six regular expressions per report otherwise)."""
    if len(message) > MEMO_MESSAGE_MAX:
        return _template(message)
    templates = _memo.templates
    template = templates.get(message)
    if template is None:
        template = _template(message)
        if len(templates) >= MEMO_MAX:
            templates.clear()
        templates[message] = template
    return template


def _template(message: str) -> str:
    text = message[:2000]
    for pattern, mask in _MASKS:
        text = pattern.sub(mask, text)
    return " ".join(text.split())


def fingerprint(report: ErrorReport, error_class: str, template: str) -> str:
    parts = [report.service, report.operation, error_class, report.type_name.strip().lower(), template]
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:40]
