"""Each kind of probe for real: http against the loopback target (through the outbound guard), tcp against a
listening socket and a closed port, a heartbeat's silence. Each run is one result row."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from healing.checks import services
from healing.checks.models import HealthCheck, HealthCheckResult
from tests.support.health_checks import allow, make_check
from tests.support.http_target import Answer, Target

pytestmark = pytest.mark.django_db


def run(check: HealthCheck) -> HealthCheckResult:
    """A scheduled run as a worker receives it, and the row it recorded."""
    due = timezone.now()
    services.run_check(check.pk, due, "scheduled")
    return HealthCheckResult.objects.get(health_check=check, due_at=due)


def http_check(target: Target, **fields: Any) -> HealthCheck:
    return make_check(kind="http", url=target.url("/health"), **fields)


# --- http -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expected", "answered", "ok"),
    [
        ([], 200, True),
        ([], 204, True),
        ([], 301, False),
        ([], 503, False),
        ([418], 418, True),
        ([418], 200, False),
    ],
)
def test_an_http_check_passes_on_an_expected_status(
    target: Target, expected: list[int], answered: int, ok: bool
) -> None:
    check = http_check(target, expected_status=expected)
    target.script(Answer(answered, "teapot" if answered == 418 else "", headers={"Location": "/elsewhere"}))
    result = run(check)
    assert (result.ok, result.status_code, result.source) == (ok, answered, "scheduled")
    assert result.latency_ms is not None and result.started_at is not None
    assert result.error == "" if ok else f"HTTP {answered}" in result.error
    assert [s.path for s in target.seen] == ["/health"]  # one call, no redirect followed


@pytest.mark.parametrize(
    ("body", "wanted", "ok"),
    [
        ({"status": "green"}, '"status":"green"', True),
        ({"status": "green"}, '"status": "green"', True),
        ("all systems go", "systems go", True),
        ({"status": "red"}, "green", False),
    ],
)
def test_an_http_check_looks_for_its_text_in_the_body(
    target: Target, body: object, wanted: str, ok: bool
) -> None:
    check = http_check(target, body_contains=wanted)
    target.script(Answer(200, body))
    result = run(check)
    assert result.ok is ok
    if not ok:
        assert result.error.startswith("HTTP 200: the body does not contain 'green'")


def test_an_http_check_fails_past_its_timeout(target: Target) -> None:
    check = http_check(target, timeout_s=0.3)
    target.script(Answer(200, delay_s=2))
    started = time.monotonic()
    result = run(check)
    assert time.monotonic() - started < 1.5
    assert (result.ok, result.status_code) == (False, None)
    assert "Timeout" in result.error


def test_an_http_check_is_refused_once_its_host_is_no_longer_allowed(target: Target) -> None:
    check = http_check(target)
    with allow("api.example.com"):
        result = run(check)
    assert result.ok is False
    assert result.error.startswith("outbound call refused")
    assert target.seen == []


# --- tcp --------------------------------------------------------------------------------------------------------


@pytest.fixture
def listening() -> Iterator[int]:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        yield int(server.getsockname()[1])


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_a_tcp_check_passes_when_the_port_accepts(listening: int) -> None:
    with allow(f"127.0.0.1:{listening}"):
        check = make_check(kind="tcp", host="127.0.0.1", port=listening)
        result = run(check)
    assert (result.ok, result.error) == (True, "")
    assert result.latency_ms is not None


def test_a_tcp_check_fails_on_a_closed_port(closed_port: int) -> None:
    with allow("127.0.0.1"):
        check = make_check(kind="tcp", host="127.0.0.1", port=closed_port)
        result = run(check)
    assert result.ok is False
    assert result.error.startswith(f"cannot connect to 127.0.0.1:{closed_port}")


def test_a_tcp_check_is_refused_by_the_outbound_guard(listening: int) -> None:
    with allow(f"127.0.0.1:{listening}"):
        check = make_check(kind="tcp", host="127.0.0.1", port=listening)
    with allow(f"127.0.0.1:{listening + 1}"):
        result = run(check)
    assert result.ok is False
    assert "connection refused by Rebound" in result.error and "OUTBOUND_ALLOWED_HOSTS" in result.error


def test_a_tcp_check_refuses_a_name_that_resolves_to_a_metadata_address(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from recovery.calls import outbound

    with allow("metadata.internal:80"):
        check = make_check(kind="tcp", host="metadata.internal", port=80)
        monkeypatch.setattr(outbound, "resolve", lambda host, port: ["169.254.169.254"])
        result = run(check)
    assert result.ok is False
    assert "link-local" in result.error


# --- heartbeat --------------------------------------------------------------------------------------------------


def silent(check: HealthCheck, seconds: float) -> HealthCheck:
    """The check as if its last ping was `seconds` ago, and its silence due when the window ended."""
    last = timezone.now() - timedelta(seconds=seconds)
    window = timedelta(seconds=check.interval_s + check.grace_s)
    HealthCheck.objects.filter(pk=check.pk).update(last_ping_at=last, next_due_at=last + window)
    check.refresh_from_db()
    return check


def test_a_heartbeats_silence_is_a_failure() -> None:
    check = silent(make_check(interval_s=60, grace_s=30, fall=1), 120)
    assert services.run_check(check.pk, check.next_due_at, "scheduled") == "fail"
    result = HealthCheckResult.objects.get(health_check=check)
    assert (result.ok, result.source, result.due_at) == (False, "scheduled", check.next_due_at)
    assert result.error.startswith("no ping within 90 s (the last one at ")
    check.refresh_from_db()
    assert check.state == "unhealthy"


def test_a_ping_after_the_claim_ends_the_silence(agent_client: object) -> None:
    check = silent(make_check(interval_s=60, grace_s=30), 120)
    due = check.next_due_at
    services.ping(check_id=check.pk, ok=True, message="", actor=services.Actor())
    assert services.run_check(check.pk, due, "scheduled") == "pinged"
    assert list(HealthCheckResult.objects.values_list("source", "ok")) == [("ping", True)]


def test_a_second_delivery_of_a_due_run_changes_nothing() -> None:
    check = silent(make_check(interval_s=60, grace_s=30), 120)
    due = check.next_due_at
    assert services.run_check(check.pk, due, "scheduled") == "fail"
    before = HealthCheck.objects.get(pk=check.pk)
    assert services.run_check(check.pk, due, "scheduled") == "duplicate"
    assert services.record(check.pk, None, source="scheduled", due_at=due) is None
    after = HealthCheck.objects.get(pk=check.pk)
    assert HealthCheckResult.objects.filter(health_check=check).count() == 1
    assert after.consecutive_failures == before.consecutive_failures == 1


@pytest.mark.parametrize(
    ("ping_age_s", "ping_ok", "ok", "error"),
    [
        (10, True, True, ""),
        (100, True, False, "no ping within 90 s"),
        (10, False, False, "the last ping reported a failure: disk full"),
        (None, None, False, "no ping within 90 s (never pinged)"),
    ],
)
def test_running_a_heartbeat_check_now_reads_its_last_ping(
    ping_age_s: float | None, ping_ok: bool | None, ok: bool, error: str
) -> None:
    check = make_check(interval_s=60, grace_s=30)
    if ping_age_s is not None:
        assert ping_ok is not None
        services.ping(check_id=check.pk, ok=ping_ok, message="disk full", actor=services.Actor())
        HealthCheck.objects.filter(pk=check.pk).update(
            last_ping_at=timezone.now() - timedelta(seconds=ping_age_s)
        )
    recorded = services.run_now(check_id=check.pk, actor=services.Actor())
    assert (recorded.result.ok, recorded.result.source) == (ok, "manual")
    assert recorded.result.error.startswith(error)


def test_a_disabled_check_is_not_run_by_a_late_delivery() -> None:
    check = make_check(enabled=False)
    assert services.run_check(check.pk, timezone.now(), "scheduled") == "disabled"
    assert services.run_check(check.pk + 1000, timezone.now(), "scheduled") == "gone"
    assert not HealthCheckResult.objects.exists()
