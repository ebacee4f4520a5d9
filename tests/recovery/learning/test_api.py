"""GET /api/v1/learning and POST /api/v1/learning/reset: the figures decayed to now, filtered by service, pattern
and class; errors naming their field; agents and viewers read, only operators forget (audited)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from core.audit.models import AuditEvent
from recovery.errors import services as error_services
from recovery.errors.classification import ErrorReport
from recovery.errors.models import ErrorPattern
from recovery.learning.models import Effectiveness

pytestmark = pytest.mark.django_db
URL = "/api/v1/learning"
RESET = "/api/v1/learning/reset"
FINGERPRINT = "f" * 40


def effectiveness(*, days_ago: float = 0.0, **fields: Any) -> Effectiveness:
    """A row as the learning services would leave it, `days_ago` days after its last fold."""
    at = timezone.now() - timedelta(days=days_ago)
    values: dict[str, Any] = {
        "scope": "service",
        "service": "openai",
        "error_class": "transient",
        "action": "retry",
        "tries": 20.0,
        "successes": 18.0,
        "recover_s_sum": 18.0,
        "as_of_s": at.timestamp(),
        "total_tries": 20,
        "total_successes": 18,
        "first_result_at": at - timedelta(days=1),
        "last_result_at": at,
        **fields,
    }
    return Effectiveness.objects.create(**values)


def a_pattern(service: str = "openai") -> ErrorPattern:
    report = ErrorReport(service=service, type_name="httpx.ConnectTimeout", message="timed out")
    error_services.record_errors([report], agent=None)
    return ErrorPattern.objects.get(service=service)


def pattern_row(pattern: ErrorPattern, **fields: Any) -> Effectiveness:
    return effectiveness(
        scope="pattern",
        fingerprint=pattern.fingerprint,
        service=pattern.service,
        error_class=pattern.error_class,
        **fields,
    )


def test_it_answers_the_settings_and_every_row(agent_client: APIClient) -> None:
    effectiveness()

    response = agent_client.get(URL)

    assert response.status_code == 200, response.json()
    body = response.json()
    assert (body["half_life_days"], body["min_tries"]) == (7.0, 10.0)
    [row] = body["rows"]
    assert row["scope"] == "service"
    assert (row["service"], row["error_class"], row["action"]) == ("openai", "transient", "retry")
    assert (row["tries"], row["successes"], row["success_rate"], row["trusted"]) == (20.0, 18.0, 0.9, True)
    assert row["lower_bound"] < 0.9 < row["upper_bound"]
    assert (row["total_tries"], row["total_successes"], row["total_unknown"]) == (20, 18, 0)
    assert row["recover_s"] == 1.0
    assert (row["pattern"], row["fingerprint"], row["delay_s"]) == (None, "", None)


def test_it_answers_the_figures_decayed_to_now(viewer_client: APIClient) -> None:
    effectiveness(days_ago=7.0)  # one half-life ago

    [row] = viewer_client.get(URL).json()["rows"]

    assert (row["tries"], row["successes"]) == pytest.approx((10.0, 9.0), abs=0.01)
    assert row["total_tries"] == 20  # the plain counts never decay


def test_it_filters_by_service(agent_client: APIClient) -> None:
    effectiveness(service="openai")
    effectiveness(service="web-search")

    rows = agent_client.get(URL, {"service": "web-search"}).json()["rows"]

    assert [r["service"] for r in rows] == ["web-search"]


def test_it_filters_by_pattern_and_names_its_id(agent_client: APIClient) -> None:
    pattern = a_pattern()
    pattern_row(pattern, action="fallback:cache")
    effectiveness()

    rows = agent_client.get(URL, {"pattern": pattern.pk}).json()["rows"]

    assert [(r["scope"], r["pattern"], r["fingerprint"]) for r in rows] == [
        ("pattern", pattern.pk, pattern.fingerprint)
    ]


def test_it_filters_by_error_class(agent_client: APIClient) -> None:
    effectiveness(error_class="transient")
    effectiveness(error_class="rate_limit")

    rows = agent_client.get(URL, {"error_class": "rate_limit"}).json()["rows"]

    assert [r["error_class"] for r in rows] == ["rate_limit"]


def test_it_reads_empty_parameters_as_no_filter(agent_client: APIClient) -> None:
    effectiveness()

    response = agent_client.get(f"{URL}?service=&pattern=")

    assert response.status_code == 200
    assert len(response.json()["rows"]) == 1


def test_it_puts_the_best_lower_bound_first(agent_client: APIClient) -> None:
    effectiveness(action="retry", tries=20.0, successes=5.0)
    effectiveness(action="fallback:cache", tries=20.0, successes=19.0)

    rows = agent_client.get(URL).json()["rows"]

    assert [r["action"] for r in rows] == ["fallback:cache", "retry"]


def test_it_answers_404_naming_pattern_for_an_unknown_pattern(agent_client: APIClient) -> None:
    response = agent_client.get(URL, {"pattern": 999_999})

    assert response.status_code == 404
    assert [e["field"] for e in response.json()["errors"]] == ["pattern"]


def test_it_answers_400_naming_error_class_for_a_bad_class(agent_client: APIClient) -> None:
    response = agent_client.get(URL, {"error_class": "bogus"})

    assert response.status_code == 400
    assert [e["field"] for e in response.json()["errors"]] == ["error_class"]


def test_it_answers_400_naming_pattern_for_a_pattern_that_is_no_id(agent_client: APIClient) -> None:
    response = agent_client.get(URL, {"pattern": "9" * 30})

    assert response.status_code == 400
    assert [e["field"] for e in response.json()["errors"]] == ["pattern"]


def test_it_caps_the_rows_at_the_limit(agent_client: APIClient) -> None:
    effectiveness(action="retry")
    effectiveness(action="wait")

    assert len(agent_client.get(URL, {"limit": 1}).json()["rows"]) == 1
    assert agent_client.get(URL, {"limit": 501}).status_code == 400


def test_it_refuses_an_agent_a_reset(agent_client: APIClient) -> None:
    effectiveness()

    response = agent_client.post(RESET, {"service": "openai", "reason": "fixed"}, format="json")

    assert response.status_code == 403
    assert Effectiveness.objects.count() == 1


def test_it_refuses_a_viewer_a_reset(viewer_client: APIClient) -> None:
    effectiveness()

    response = viewer_client.post(RESET, {"service": "openai", "reason": "fixed"}, format="json")

    assert response.status_code == 403
    assert Effectiveness.objects.count() == 1


def test_it_lets_an_operator_forget_a_service_audited(operator_client: APIClient) -> None:
    effectiveness(service="openai")
    effectiveness(service="openai", error_class="rate_limit")
    kept = effectiveness(service="web-search")

    response = operator_client.post(RESET, {"service": "openai", "reason": "INC-42 fixed"}, format="json")

    assert response.status_code == 200, response.json()
    assert response.json() == {"deleted": 2}
    assert list(Effectiveness.objects.values_list("pk", flat=True)) == [kept.pk]
    event = AuditEvent.objects.get(action="learning.reset")
    assert event.reason == "INC-42 fixed"
    assert event.actor_user == operator_client.user  # type: ignore[attr-defined]
    assert event.after is not None and event.after["deleted"] == 2


def test_it_lets_an_operator_forget_a_pattern(operator_client: APIClient) -> None:
    pattern = a_pattern()
    pattern_row(pattern)
    kept = effectiveness()

    response = operator_client.post(RESET, {"pattern": pattern.pk, "reason": "fixed"}, format="json")

    assert response.json() == {"deleted": 1}
    assert list(Effectiveness.objects.values_list("pk", flat=True)) == [kept.pk]


def test_it_answers_400_naming_service_and_pattern_when_neither_is_given(operator_client: APIClient) -> None:
    effectiveness()

    response = operator_client.post(RESET, {"reason": "fixed"}, format="json")

    assert response.status_code == 400
    assert {e["field"] for e in response.json()["errors"]} == {"service", "pattern"}
    assert Effectiveness.objects.count() == 1


def test_it_answers_400_naming_reason_without_one(operator_client: APIClient) -> None:
    effectiveness()

    response = operator_client.post(RESET, {"service": "openai", "reason": "  "}, format="json")

    assert response.status_code == 400
    assert [e["field"] for e in response.json()["errors"]] == ["reason"]
    assert Effectiveness.objects.count() == 1


def test_it_answers_404_naming_pattern_for_an_unknown_pattern_to_forget(operator_client: APIClient) -> None:
    response = operator_client.post(RESET, {"pattern": 999_999, "reason": "fixed"}, format="json")

    assert response.status_code == 404
    assert [e["field"] for e in response.json()["errors"]] == ["pattern"]
    assert not AuditEvent.objects.filter(action="learning.reset").exists()
