"""The health-check API: checks created, changed and deleted by operators (validated per kind, audited), read by
every principal; run now; a heartbeat's ping; a check's results, paged. Every answer matches /api/schema/."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from core.audit.models import AuditEvent
from healing.checks import services
from healing.checks.models import HealthCheck, HealthCheckResult
from healing.checks.probes import Outcome
from tests.support.health_checks import allow, make_check
from tests.support.http_target import Answer, Target
from tests.support.openapi import conforms

pytestmark = pytest.mark.django_db
URL = "/api/v1/health-checks"


def http_body(target: Target, **changes: Any) -> dict[str, Any]:
    return {
        "name": "api",
        "service": "svc",
        "kind": "http",
        "url": target.url("/health"),
        "reason": "watch it",
        **changes,
    }


def fields_at_fault(response: Any) -> list[str]:
    assert response.status_code == 400, response.content
    return [e["field"] for e in response.json()["errors"]]


# --- creating ------------------------------------------------------------------------------------------------


def test_it_creates_an_http_check_that_runs_at_once(operator_client: APIClient, target: Target) -> None:
    before = timezone.now()
    response = operator_client.post(URL, http_body(target, expected_status=[200, 204, 200]), format="json")

    assert response.status_code == 201, response.json()
    conforms(response, "post", "/api/v1/health-checks")
    body = response.json()
    assert (body["name"], body["kind"], body["state"], body["last_result"]) == (
        "api",
        "http",
        "unknown",
        None,
    )
    assert body["expected_status"] == [200, 204]
    assert (body["consecutive_passes"], body["consecutive_failures"], body["method"]) == (0, 0, "GET")
    check = HealthCheck.objects.get(name="api")
    assert check.next_due_at is not None and before <= check.next_due_at <= timezone.now()
    event = AuditEvent.objects.get(action="health_check.create")
    assert event.after is not None
    assert (event.reason, event.target_id, event.after["url"]) == (
        "watch it",
        str(check.pk),
        target.url("/health"),
    )


def test_a_new_heartbeat_check_waits_for_its_first_window(operator_client: APIClient) -> None:
    body = {"name": "nightly", "service": "digest", "kind": "heartbeat", "interval_s": 60, "grace_s": 30}
    response = operator_client.post(URL, {**body, "reason": "cron"}, format="json")
    assert response.status_code == 201, response.json()
    check = HealthCheck.objects.get(name="nightly")
    assert check.next_due_at is not None
    assert 85 <= (check.next_due_at - timezone.now()).total_seconds() <= 90


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"url": None}, "url"),
        ({"kind": "tcp", "url": None, "host": "127.0.0.1"}, "port"),
        ({"kind": "celery", "url": None}, "queue"),
        ({"kind": "gopher"}, "kind"),
        ({"kind": None}, "kind"),
        ({"surprise": 1}, "surprise"),
        ({"port": 80}, "port"),  # a tcp field on an http check
        ({"grace_s": 5}, "grace_s"),
        ({"url": "ftp://127.0.0.1/x"}, "url"),
        ({"url": "http://example.com/health"}, "url"),  # not in OUTBOUND_ALLOWED_HOSTS
        ({"timeout_s": 40, "interval_s": 30}, "timeout_s"),
        ({"rise": 0}, "rise"),
        ({"interval_s": 0.5}, "interval_s"),
        ({"expected_status": [200, 700]}, "expected_status[1]"),
        ({"method": "BREW"}, "method"),
        ({"reason": "  "}, "reason"),
        ({"reason": None}, "reason"),
        ({"name": "Not A Slug"}, "name"),
    ],
)
def test_it_refuses_a_bad_check_naming_the_field(
    operator_client: APIClient, target: Target, changes: dict[str, Any], field: str
) -> None:
    body = {k: v for k, v in http_body(target, **changes).items() if v is not None}
    response = operator_client.post(URL, body, format="json")
    assert field in fields_at_fault(response)
    conforms(response, "post", "/api/v1/health-checks")
    assert not HealthCheck.objects.exists()


def test_it_refuses_a_tcp_target_the_allowlist_does_not_name(operator_client: APIClient) -> None:
    body = {"name": "db", "service": "db", "kind": "tcp", "host": "10.0.0.5", "port": 5432, "reason": "x"}
    with allow("127.0.0.1:5432"):
        assert fields_at_fault(operator_client.post(URL, body, format="json")) == ["host"]
        allowed = operator_client.post(URL, {**body, "host": "127.0.0.1"}, format="json")
    assert allowed.status_code == 201, allowed.json()


def test_it_refuses_a_taken_name(operator_client: APIClient, target: Target) -> None:
    make_check("api")
    assert fields_at_fault(operator_client.post(URL, http_body(target), format="json")) == ["name"]


def test_it_refuses_a_body_that_is_not_an_object(operator_client: APIClient) -> None:
    assert fields_at_fault(operator_client.post(URL, [1, 2], format="json")) == ["body"]


@pytest.mark.parametrize("role", ["agent_client", "viewer_client"])
def test_only_operators_write(role: str, request: pytest.FixtureRequest, target: Target) -> None:
    client: APIClient = request.getfixturevalue(role)
    make_check("beat")
    created = client.post(URL, http_body(target), format="json")
    changed = client.patch(f"{URL}/beat", {"interval_s": 60, "reason": "x"}, format="json")
    deleted = client.delete(f"{URL}/beat?reason=x")
    ran = client.post(f"{URL}/beat/run")
    assert [r.status_code for r in (created, changed, deleted, ran)] == [403, 403, 403, 403]
    conforms(created, "post", "/api/v1/health-checks")
    assert HealthCheck.objects.get().interval_s == 30
    # Every principal reads.
    assert client.get(URL).status_code == 200
    assert client.get(f"{URL}/beat").status_code == 200
    assert client.get(f"{URL}/beat/results").status_code == 200


# --- reading ---------------------------------------------------------------------------------------------------


def test_it_lists_checks_with_their_newest_result(agent_client: APIClient) -> None:
    beat = make_check("beat", service="digest")
    make_check("other", service="mail")
    services.record(beat.pk, Outcome(False, error="old"), source="manual")
    services.record(beat.pk, Outcome(True), source="manual")

    response = agent_client.get(f"{URL}?service=digest")

    conforms(response, "get", "/api/v1/health-checks")
    [only] = response.json()["results"]
    assert only["name"] == "beat"
    assert (only["last_result"]["ok"], only["last_result"]["source"]) == (True, "manual")
    assert only["consecutive_passes"] == 1
    assert [c["name"] for c in agent_client.get(URL).json()["results"]] == ["beat", "other"]
    assert agent_client.get(f"{URL}?state=bogus").status_code == 400


def test_it_answers_404_for_an_unknown_or_impossible_name(agent_client: APIClient) -> None:
    for name, status in [("nope", 404), ("Not%20a%20slug", 404), ("a%00b", 400)]:
        response = agent_client.get(f"{URL}/{name}")
        assert response.status_code == status, name  # a NUL in a path is refused before any view (400)
        conforms(response, "get", "/api/v1/health-checks/{name}")


def test_it_pages_results_newest_first(viewer_client: APIClient) -> None:
    check = make_check("beat")
    for n in range(5):
        services.record(
            check.pk, Outcome(n % 2 == 0, error="" if n % 2 == 0 else f"miss {n}"), source="manual"
        )

    first = viewer_client.get(f"{URL}/beat/results?page_size=2")
    second = viewer_client.get(first.json()["next"])

    conforms(first, "get", "/api/v1/health-checks/{name}/results")
    ids = list(HealthCheckResult.objects.order_by("-created_at", "-id").values_list("id", flat=True))
    assert first.json()["count"] == 5
    assert [r["id"] for r in first.json()["results"]] + [r["id"] for r in second.json()["results"]] == ids[:4]
    assert first.json()["results"][1]["error"] == "miss 3"
    assert viewer_client.get(f"{URL}/beat/results?page_size=0").status_code == 400
    assert viewer_client.get(f"{URL}/nope/results").status_code == 404


# --- changing and deleting ----------------------------------------------------------------------------------


def test_it_changes_a_check_audited_and_runs_it_again_soon(
    operator_client: APIClient, target: Target
) -> None:
    check = make_check("api", kind="http", url=target.url("/health"))
    HealthCheck.objects.filter(pk=check.pk).update(next_due_at=timezone.now() + timedelta(hours=1))

    response = operator_client.patch(
        f"{URL}/api", {"interval_s": 60, "fall": 2, "reason": "fewer calls"}, format="json"
    )

    assert response.status_code == 200, response.json()
    conforms(response, "patch", "/api/v1/health-checks/{name}")
    check.refresh_from_db()
    assert (check.interval_s, check.fall) == (60, 2)
    assert check.next_due_at is not None and check.next_due_at <= timezone.now()
    event = AuditEvent.objects.get(action="health_check.update")
    assert event.before is not None and event.after is not None
    assert (event.reason, event.before["interval_s"], event.after["interval_s"]) == ("fewer calls", 30, 60)


def test_a_change_of_kind_needs_the_new_kinds_fields_and_clears_the_old(
    operator_client: APIClient, target: Target
) -> None:
    make_check("api", kind="http", url=target.url("/health"))
    refused = operator_client.patch(f"{URL}/api", {"kind": "tcp", "reason": "x"}, format="json")
    assert fields_at_fault(refused) == ["host", "port"]
    with allow("127.0.0.1"):
        moved = operator_client.patch(
            f"{URL}/api", {"kind": "tcp", "host": "127.0.0.1", "port": 5432, "reason": "x"}, format="json"
        )
    assert moved.status_code == 200, moved.json()
    assert (moved.json()["kind"], moved.json()["url"], moved.json()["port"]) == ("tcp", "", 5432)


def test_it_refuses_a_field_of_another_kind_in_a_change(operator_client: APIClient, target: Target) -> None:
    make_check("api", kind="http", url=target.url("/health"))
    response = operator_client.patch(f"{URL}/api", {"queue": "celery", "reason": "x"}, format="json")
    assert fields_at_fault(response) == ["queue"]
    conforms(response, "patch", "/api/v1/health-checks/{name}")
    assert (
        operator_client.patch(f"{URL}/api", {"interval_s": None, "reason": "x"}, format="json").status_code
        == 400
    )
    assert fields_at_fault(operator_client.patch(f"{URL}/api", {"rise": 3}, format="json")) == ["reason"]


def test_it_deletes_a_check_with_its_results_audited(operator_client: APIClient) -> None:
    check = make_check("beat", rise=1)
    services.record(check.pk, Outcome(True), source="manual")

    assert fields_at_fault(operator_client.delete(f"{URL}/beat")) == ["reason"]
    response = operator_client.delete(f"{URL}/beat?reason=retired")

    assert response.status_code == 204
    conforms(response, "delete", "/api/v1/health-checks/{name}")
    assert not HealthCheck.objects.exists() and not HealthCheckResult.objects.exists()
    event = AuditEvent.objects.get(action="health_check.delete")
    assert event.before is not None
    assert (event.reason, event.before["name"]) == ("retired", "beat")
    assert operator_client.delete(f"{URL}/beat?reason=again").status_code == 404


# --- running now ------------------------------------------------------------------------------------------------


def test_an_operator_runs_a_check_now_and_gets_its_result(operator_client: APIClient, target: Target) -> None:
    make_check("api", kind="http", url=target.url("/health"), rise=1)
    target.script(Answer(200, {"status": "green"}))

    response = operator_client.post(f"{URL}/api/run")

    assert response.status_code == 200, response.json()
    conforms(response, "post", "/api/v1/health-checks/{name}/run")
    result, check = response.json()["result"], response.json()["check"]
    assert (result["ok"], result["status_code"], result["source"], result["error"]) == (
        True,
        200,
        "manual",
        "",
    )
    assert result["latency_ms"] > 0
    assert (check["state"], check["last_result"]["id"]) == ("healthy", result["id"])
    assert [s.path for s in target.seen] == ["/health"]
    event = AuditEvent.objects.get(action="health_check.run")
    assert event.after == {"result": result["id"], "ok": True, "state": "healthy"}


def test_a_failing_run_says_why(operator_client: APIClient, target: Target) -> None:
    make_check("api", kind="http", url=target.url("/health"))
    target.script(Answer(503, "down for maintenance"))
    result = operator_client.post(f"{URL}/api/run").json()["result"]
    assert (result["ok"], result["status_code"]) == (False, 503)
    assert "503" in result["error"] and "down for maintenance" in result["error"]


def test_a_disabled_check_does_not_run(operator_client: APIClient) -> None:
    make_check("beat", enabled=False)
    response = operator_client.post(f"{URL}/beat/run")
    assert response.status_code == 409
    conforms(response, "post", "/api/v1/health-checks/{name}/run")
    assert not HealthCheckResult.objects.exists()


# --- pings ------------------------------------------------------------------------------------------------------


def test_an_agent_pings_a_heartbeat_check(agent_client: APIClient) -> None:
    check = make_check("beat", interval_s=60, grace_s=30, rise=1)

    response = agent_client.post(f"{URL}/beat/ping")

    assert response.status_code == 200, response.json()
    conforms(response, "post", "/api/v1/health-checks/{name}/ping")
    result = response.json()["result"]
    assert (result["ok"], result["source"], result["latency_ms"]) == (True, "ping", None)
    check.refresh_from_db()
    assert check.state == "healthy"
    assert check.last_ping_at is not None and check.next_due_at == check.last_ping_at + timedelta(seconds=90)


def test_a_failing_ping_records_its_message(agent_client: APIClient) -> None:
    make_check("beat", fall=1)
    body = {"status": "fail", "message": "backup: disk full"}
    response = agent_client.post(f"{URL}/beat/ping", body, format="json")
    result = response.json()["result"]
    assert (result["ok"], result["error"]) == (False, "backup: disk full")
    assert response.json()["check"]["state"] == "unhealthy"


def test_only_heartbeat_checks_take_pings(agent_client: APIClient, target: Target) -> None:
    make_check("api", kind="http", url=target.url("/health"))
    response = agent_client.post(f"{URL}/api/ping")
    assert response.status_code == 409
    assert "only heartbeat checks take pings" in response.json()["detail"]
    conforms(response, "post", "/api/v1/health-checks/{name}/ping")
    assert not HealthCheckResult.objects.exists()


def test_it_refuses_a_bad_ping(agent_client: APIClient, viewer_client: APIClient) -> None:
    make_check("beat")
    assert fields_at_fault(agent_client.post(f"{URL}/beat/ping", {"status": "meh"}, format="json")) == [
        "status"
    ]
    assert fields_at_fault(agent_client.post(f"{URL}/beat/ping", [1], format="json")) == ["body"]
    assert fields_at_fault(agent_client.post(f"{URL}/beat/ping", {"extra": 1}, format="json")) == ["extra"]
    assert viewer_client.post(f"{URL}/beat/ping").status_code == 403
    assert agent_client.post(f"{URL}/nope/ping").status_code == 404
    assert not HealthCheckResult.objects.exists()
