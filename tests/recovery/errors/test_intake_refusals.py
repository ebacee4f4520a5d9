"""Issue 11, item 3: what the database or the drain could refuse is refused before 201, naming the field; what
is accepted is written."""

from __future__ import annotations

import json
from typing import Any

import pytest
import redis
from django.conf import settings
from django.test import override_settings

from recovery.errors import intake
from recovery.errors import services as error_services
from recovery.errors.classification import ErrorReport
from recovery.errors.models import ClassificationRule, ErrorEvent, ErrorPattern
from tests.support.factories import RuleFactory, rebound_settings

BUFFERED = rebound_settings(INTAKE_MODE="buffered")


def _client() -> redis.Redis:
    return redis.Redis.from_url(settings.TEST_REDIS_URL)


def _post_raw(client: Any, url: str, body: str) -> Any:
    # Raw JSON text, as a careless client sends it (the test client would refuse to encode some of it).
    return client.generic("POST", url, body.encode("utf-8", "surrogatepass"), "application/json")


# (the item as Python values, the field the 400 names)
REFUSED: list[tuple[dict[str, Any], str]] = [
    ({"message": "bad\x00byte"}, "message"),
    ({"message": "half a pair \ud83d"}, "message"),
    ({"type": "Timeout\x00Error"}, "type"),
    ({"operation": "chat\udc00"}, "operation"),
    ({"message": "x", "context": {"note": "a\x00b"}}, "context"),
    ({"message": "x", "context": {"k\x00": 1}}, "context"),
    ({"message": "x", "context": {"deep": [{"s": "\udfff"}]}}, "context"),
    ({"message": "x", "context": {"n": float("inf")}}, "context"),
    ({"message": "x", "context": {"n": float("nan")}}, "context"),
    ({"message": "x", "context": {"n": 10**30}}, "context"),
    ({"message": "x", "context": json.loads("[" * 0 + '{"a":' * 40 + "1" + "}" * 40)}, "context"),
    ({"message": "x", "retry_after": 1e400}, "retry_after"),
]


@pytest.mark.parametrize(("item", "field"), REFUSED)
def test_the_schema_refuses_what_cannot_be_stored_naming_the_field(item: dict[str, Any], field: str) -> None:
    from pydantic import TypeAdapter

    from core.api.errors import InvalidInput
    from core.api.validation import parse
    from recovery.errors.schemas import ErrorIn

    with pytest.raises(InvalidInput) as raised:
        parse(TypeAdapter(list[ErrorIn]), [{"message": "fine"}, item])
    assert [e["field"] for e in raised.value.errors] == [f"[1].{field}"]


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
@override_settings(REBOUND=BUFFERED)
@pytest.mark.parametrize(
    "body",
    [
        '{"service": "svc", "message": "nul \\u0000 here"}',
        '{"service": "svc", "message": "lone \\ud800 surrogate"}',
        '{"service": "svc", "message": "big", "context": {"n": 1e400}}',
        '[{"service": "svc", "message": "ok"}, {"service": "svc", "context": {"a": "\\u0000"}, "status_code": 500}]',
    ],
)
def test_the_buffered_intake_answers_400_and_queues_nothing(agent_client: Any, body: str) -> None:
    response = _post_raw(agent_client, "/api/v1/errors", body)
    assert response.status_code == 400, response.content
    assert response.json()["errors"]
    assert _client().xlen(intake.STREAM) == 0
    assert intake.drain() == 0
    assert ErrorEvent.objects.count() == 0


# Odd but storable: everything here is accepted and written.
ODD: list[dict[str, Any]] = [
    {"service": "svc", "message": "emoji 🚀 and astral 𝄞, RTL ‮ mark", "context": {"😀": "𝄞"}},
    {"service": "svc", "message": "m" * 10_000, "type": "T" * 200, "operation": "o" * 200},
    {"service": "s" * 100, "status_code": 599, "retry_after": 0},
    {
        "service": "svc",
        "message": "numbers",
        "context": {"max": 2**63 - 1, "min": -(2**63), "f": 1.7976931348623157e308, "tiny": 5e-324},
    },
    {"service": "svc", "message": "nested", "context": json.loads('{"a":' * 31 + "[]" + "}" * 31)},
    {"service": "svc", "message": "a late date", "retry_after": "Fri, 31 Dec 9999 23:59:59 GMT"},
    {"service": "svc", "message": "controls \x01\x1f\x7f and \u2028"},
]


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
@override_settings(REBOUND=BUFFERED)
def test_everything_accepted_is_written_by_the_drain(agent_client: Any) -> None:
    response = agent_client.post("/api/v1/errors", ODD, format="json")
    assert response.status_code == 201, response.json()
    assert intake.drain() == len(ODD)
    assert _client().xlen(intake.DEAD) == 0
    assert ErrorEvent.objects.count() == len(ODD)
    stored = ErrorEvent.objects.get(message="numbers").context
    assert stored["max"] == 2**63 - 1 and float(stored["f"]) == 1.7976931348623157e308


@pytest.mark.postgres
@pytest.mark.django_db
def test_the_sync_intake_writes_the_same_odd_reports(agent_client: Any) -> None:
    response = agent_client.post("/api/v1/errors", ODD, format="json")
    assert response.status_code == 201, response.json()
    assert ErrorEvent.objects.count() == len(ODD)


@pytest.mark.django_db
def test_a_retry_after_beyond_the_maximum_is_cut_to_it(agent_client: Any) -> None:
    with override_settings(REBOUND=rebound_settings(MAX_RETRY_AFTER_S=3600.0)):
        response = agent_client.post(
            "/api/v1/errors", {"service": "svc", "status_code": 429, "retry_after": 1e308}, format="json"
        )
    assert response.status_code == 201
    assert response.json()["retry_after_s"] == 3600.0
    assert ErrorEvent.objects.get().retry_after_s == 3600.0


@pytest.mark.django_db
def test_a_report_from_inside_rebound_is_made_storable_not_refused() -> None:
    # Reports built from a remote's answer (outbound calls, tasks) are not a client's input: kept, cleaned.
    report = ErrorReport(
        service="svc", message="remote said \x00\ud800", context={"n": float("nan"), "k\x00": "v\x00"}
    )
    error_services.record_errors([report], agent=None)
    event = ErrorEvent.objects.get()
    assert event.message == "remote said \ufffd\ufffd"
    assert event.context == {"n": "nan", "k\ufffd": "v\ufffd"}


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("query", "field"),
    [("search=a%00b", "search"), ("since=0001-01-01T00:00:00%2B05:00", "since")],
)
def test_the_pattern_filter_refuses_what_the_database_cannot_take(
    agent_client: Any, query: str, field: str
) -> None:
    response = agent_client.get(f"/api/v1/patterns?{query}")
    assert response.status_code == 400, response.content
    assert response.json()["errors"][0]["field"] == field


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"name": "bad\x00name"}, "name"),
        ({"description": "d\ud800"}, "description"),
        ({"type_names": ["T\x00"]}, "type_names"),
        ({"message_regex": "a\x00b"}, "message_regex"),
        ({"service": "s\x00"}, "service"),
        ({"priority": 2**40}, "priority"),
        ({"reason": "why\x00"}, "reason"),
    ],
)
def test_a_rule_refuses_what_the_database_cannot_take(
    operator_client: Any, change: dict[str, Any], field: str
) -> None:
    body = {
        "name": "new rule",
        "message_regex": "boom",
        "error_class": "resource",
        "severity": "medium",
        "retryable": True,
        "counts_toward_breaker": True,
        "reason": "because",
        **change,
    }
    response = _post_raw(operator_client, "/api/v1/rules", json.dumps(body))
    assert response.status_code == 400, response.content
    assert response.json()["errors"][0]["field"].split("[")[0] == field
    assert not ClassificationRule.objects.filter(builtin=False).exists()


@pytest.mark.django_db
def test_a_rule_deletion_refuses_a_reason_the_audit_cannot_store(operator_client: Any) -> None:
    rule = RuleFactory()
    response = operator_client.delete(f"/api/v1/rules/{rule.pk}?reason=gone%00")
    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == "reason"
    assert ClassificationRule.objects.filter(pk=rule.pk).exists()


@pytest.mark.django_db
def test_a_batch_refuses_a_success_count_out_of_range(agent_client: Any) -> None:
    response = agent_client.post(
        "/api/v1/errors", {"errors": [{"status_code": 500}], "successes": 10**12}, format="json"
    )
    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == "successes"
    assert ErrorPattern.objects.count() == 0
