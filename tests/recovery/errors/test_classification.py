"""Table-driven: the built-in rules (data migration recovery 0002) against the signals agents send."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest

from recovery.errors.classification import (
    ErrorReport,
    message_template,
    parse_retry_after,
    retry_after_from_headers,
)
from recovery.errors.services import classify_report
from tests.support.factories import RuleFactory

pytestmark = pytest.mark.django_db

# (report fields, error class, severity, kind, retryable, counts toward breaker, needs human)
CASES: list[tuple[dict[str, Any], str, str, str, bool, bool, bool]] = [
    # transient kinds of the source tables
    ({"type_name": "httpx.ConnectTimeout"}, "transient", "medium", "connection_timeout", True, True, False),
    ({"type_name": "openai.APITimeoutError"}, "transient", "medium", "connection_timeout", True, True, False),
    ({"type_name": "TimeoutError"}, "transient", "medium", "connection_timeout", True, True, False),
    (
        {"message": "upstream request timed out"},
        "transient",
        "medium",
        "connection_timeout",
        True,
        True,
        False,
    ),
    ({"status_code": 408}, "transient", "medium", "connection_timeout", True, True, False),
    ({"status_code": 504}, "transient", "medium", "connection_timeout", True, True, False),
    (
        {"type_name": "requests.exceptions.ConnectionError"},
        "transient",
        "medium",
        "connection_failed",
        True,
        True,
        False,
    ),
    (
        {"message": "connect: Connection refused"},
        "transient",
        "medium",
        "connection_failed",
        True,
        True,
        False,
    ),
    (
        {"type_name": "psycopg.errors.DeadlockDetected"},
        "transient",
        "medium",
        "database_lock",
        True,
        True,
        False,
    ),
    (
        {
            "type_name": "sqlalchemy.exc.OperationalError",
            "message": "(sqlite3.OperationalError) database is locked",
        },
        "transient",
        "medium",
        "database_lock",
        True,
        True,
        False,
    ),
    ({"message": "ERROR: lock timeout"}, "transient", "medium", "database_lock", True, True, False),
    ({"status_code": 423}, "transient", "medium", "database_lock", True, True, False),
    ({"status_code": 409}, "transient", "low", "conflict", True, False, False),
    (
        {"type_name": "RateLimitError", "status_code": 429},
        "rate_limit",
        "medium",
        "rate_limit",
        True,
        True,
        False,
    ),
    ({"status_code": 429}, "rate_limit", "medium", "rate_limit", True, True, False),
    ({"message": "Rate limit exceeded, slow down"}, "rate_limit", "medium", "rate_limit", True, True, False),
    ({"message": "Daily quota exceeded"}, "rate_limit", "medium", "rate_limit", True, True, False),
    (
        {"type_name": "RateLimitError", "message": "You exceeded your current quota: insufficient_quota"},
        "resource",
        "high",
        "quota_exhausted",
        False,
        True,
        True,
    ),
    ({"status_code": 503}, "external_service", "high", "service_unavailable", True, True, False),
    ({"status_code": 502}, "external_service", "high", "service_unavailable", True, True, False),
    (
        {"message": "503 Service Unavailable"},
        "external_service",
        "high",
        "service_unavailable",
        True,
        True,
        False,
    ),
    (
        {"type_name": "anthropic.InternalServerError"},
        "external_service",
        "high",
        "service_unavailable",
        True,
        True,
        False,
    ),
    (
        {"type_name": "redis.exceptions.BusyLoadingError"},
        "resource",
        "medium",
        "temporary_resource",
        True,
        True,
        False,
    ),
    ({"message": "Celery queue is full"}, "resource", "medium", "temporary_resource", True, True, False),
    ({"type_name": "queue.Full"}, "resource", "medium", "temporary_resource", True, True, False),
    # permanent kinds
    ({"type_name": "pydantic.ValidationError"}, "validation", "low", "invalid_input", False, False, False),
    ({"status_code": 400}, "validation", "low", "invalid_input", False, False, False),
    ({"status_code": 422}, "validation", "low", "invalid_input", False, False, False),
    (
        {"message": "maximum context length is 128000 tokens", "type_name": "BadRequestError"},
        "validation",
        "medium",
        "context_length",
        False,
        False,
        False,
    ),
    ({"status_code": 404}, "validation", "low", "not_found", False, False, False),
    (
        {"type_name": "django.core.exceptions.ObjectDoesNotExist"},
        "validation",
        "low",
        "not_found",
        False,
        False,
        False,
    ),
    ({"status_code": 401}, "authentication", "high", "authentication_failed", False, False, True),
    (
        {"type_name": "openai.AuthenticationError"},
        "authentication",
        "high",
        "authentication_failed",
        False,
        False,
        True,
    ),
    (
        {"message": "Invalid API key provided"},
        "authentication",
        "high",
        "authentication_failed",
        False,
        False,
        True,
    ),
    ({"status_code": 403}, "authentication", "high", "permission_denied", False, False, True),
    ({"type_name": "PermissionError"}, "authentication", "high", "permission_denied", False, False, True),
    (
        {"message": "permission denied for table ledger"},
        "authentication",
        "high",
        "permission_denied",
        False,
        False,
        True,
    ),
    (
        {"type_name": "psycopg.errors.UniqueViolation"},
        "validation",
        "medium",
        "constraint_violation",
        False,
        False,
        False,
    ),
    (
        {"message": 'duplicate key value violates unique constraint "x"'},
        "validation",
        "medium",
        "constraint_violation",
        False,
        False,
        False,
    ),
    ({"type_name": "NotImplementedError"}, "validation", "medium", "unimplemented", False, False, False),
    ({"status_code": 501}, "validation", "medium", "unimplemented", False, False, False),
    (
        {"message": "MCP error -32601: Method not found"},
        "validation",
        "medium",
        "unimplemented",
        False,
        False,
        False,
    ),
    # fatal and internal
    (
        {"type_name": "django.core.exceptions.ImproperlyConfigured"},
        "fatal",
        "critical",
        "configuration",
        False,
        True,
        True,
    ),
    ({"type_name": "AttributeError"}, "internal", "high", "bug", False, False, False),
    ({"message": "something odd happened"}, "internal", "medium", "unknown", False, True, False),
    ({"type_name": "WeirdCustomThing"}, "internal", "medium", "unknown", False, True, False),
]


@pytest.mark.parametrize(("fields", "cls", "severity", "kind", "retryable", "counts", "human"), CASES)
def test_it_classifies_the_source_tables(
    fields: dict[str, Any], cls: str, severity: str, kind: str, retryable: bool, counts: bool, human: bool
) -> None:
    verdict = classify_report(ErrorReport(**fields)).verdict
    assert (verdict.error_class, verdict.severity, verdict.kind) == (cls, severity, kind), verdict.why
    assert (verdict.retryable, verdict.counts_toward_breaker, verdict.needs_human) == (
        retryable,
        counts,
        human,
    )


def test_it_explains_which_rule_matched_and_why() -> None:
    verdict = classify_report(ErrorReport(status_code=503)).verdict
    assert verdict.rule is not None
    assert verdict.rule.name == "service unavailable (5xx)"
    assert verdict.why[0].startswith("rule 'service unavailable (5xx)'")
    assert "status 503 is within 500-599" in verdict.why


def test_it_lets_a_custom_rule_outrank_the_built_ins() -> None:
    RuleFactory(
        name="pinecone overload",
        priority=5,
        service="pinecone",
        message_regex="overloaded",
        status_min=400,
        status_max=400,
    )
    verdict = classify_report(
        ErrorReport(service="pinecone", status_code=400, message="index overloaded")
    ).verdict
    assert verdict.rule is not None and verdict.rule.name == "pinecone overload"
    assert verdict.error_class == "resource"
    other = classify_report(ErrorReport(service="other", status_code=400, message="index overloaded")).verdict
    assert other.error_class == "validation"


def test_it_ignores_disabled_rules() -> None:
    RuleFactory(name="off", priority=1, enabled=False, message_regex="boom", error_class="fatal")
    assert classify_report(ErrorReport(message="boom")).verdict.error_class == "internal"


def test_it_reads_retry_after_as_seconds_or_an_http_date() -> None:
    now = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    assert parse_retry_after("20") == 20.0
    assert parse_retry_after(1.5) == 1.5
    assert parse_retry_after(format_datetime(now + timedelta(seconds=90), usegmt=True), now=now) == 90.0
    assert parse_retry_after(format_datetime(now - timedelta(seconds=90), usegmt=True), now=now) == 0.0
    assert parse_retry_after(None) is None
    for bad in ("soon", True, float("nan")):
        with pytest.raises(ValueError):
            parse_retry_after(bad)


def test_it_reads_retry_after_from_headers_whatever_the_case() -> None:
    assert retry_after_from_headers({"retry-after": "7"}) == 7.0
    assert retry_after_from_headers({"Retry-After": "garbage"}) is None
    assert retry_after_from_headers({"X-Other": "1"}) is None


def test_it_masks_variable_parts_of_messages() -> None:
    a = message_template(
        "user 42 not found in 'acme' (id 3f2b8c1e-4a5d-4e6f-8a9b-0c1d2e3f4a5b) at 0xdeadbeef"
    )
    b = message_template("user 7 not found in 'globex' (id 11111111-2222-4333-8444-555555555555) at 0x1f")
    assert a == b == "user <n> not found in <str> (id <uuid>) at <hex>"
    assert message_template("commit 9fceb02d0ae598e95dc970b74767f19372d61af8 by bob@example.com") == (
        "commit <hex> by <email>"
    )


def test_it_gives_the_same_fingerprint_to_repeats_and_another_to_other_services() -> None:
    first = classify_report(ErrorReport(service="a", type_name="TimeoutError", message="timed out after 5s"))
    again = classify_report(ErrorReport(service="a", type_name="TimeoutError", message="timed out after 9s"))
    other = classify_report(ErrorReport(service="b", type_name="TimeoutError", message="timed out after 5s"))
    assert first.fingerprint == again.fingerprint
    assert first.fingerprint != other.fingerprint
