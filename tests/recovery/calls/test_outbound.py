"""The outbound-call executor against a real local HTTP server, the allowlist (SSRF), and registered tasks."""

from __future__ import annotations

import ssl
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.test import override_settings

from core.api.errors import InvalidInput
from recovery.calls import outbound, task_registry
from recovery.calls import tasks as demo_tasks
from recovery.calls.outbound import OutboundRequest
from recovery.errors.classification import ErrorReport
from recovery.errors.services import classify_report
from tests.support.factories import rebound_settings
from tests.support.http_target import Answer, QuietServer, Target, running_target
from tests.support.processes import free_port


@pytest.fixture
def target() -> Iterator[Target]:
    with (
        running_target() as server,
        override_settings(REBOUND=rebound_settings(OUTBOUND_ALLOWED_HOSTS=[server.host])),
    ):
        yield server


def allow(*hosts: str, **more: Any) -> Any:
    return override_settings(REBOUND=rebound_settings(OUTBOUND_ALLOWED_HOSTS=list(hosts), **more))


def refused_field(data: dict[str, Any]) -> tuple[str, str]:
    with pytest.raises(InvalidInput) as caught:
        outbound.parse_request(data)
    assert len(caught.value.errors) >= 1
    return caught.value.errors[0]["field"], caught.value.errors[0]["message"]


# --- parsing and the allowlist ---------------------------------------------------------------------------


def test_it_parses_a_request_with_its_defaults() -> None:
    with allow("api.example.com"):
        req = outbound.parse_request({"url": "https://api.example.com/v1/things"})
    assert req == OutboundRequest(
        method="GET",
        url="https://api.example.com/v1/things",
        headers={},
        body=None,
        success_statuses=tuple(range(200, 300)),
        timeout_s=10.0,
    )


def test_it_caps_the_timeout_and_keeps_the_callers_fields() -> None:
    with allow("api.example.com", OUTBOUND_MAX_TIMEOUT_SECONDS=5.0):
        req = outbound.parse_request(
            {
                "method": "post",
                "url": "https://api.example.com/v1/things",
                "headers": {"X-Trace": "abc"},
                "body": {"a": [1, 2]},
                "success_statuses": [201, 201, 202],
                "timeout_s": 60,
            }
        )
    assert (req.method, req.headers, req.body) == ("POST", {"X-Trace": "abc"}, {"a": [1, 2]})
    assert (req.success_statuses, req.timeout_s) == ((201, 202), 5.0)
    assert OutboundRequest.from_json(req.to_json()) == req


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("https://evil.example/steal", "is not allowed"),
        ("http://169.254.169.254/latest/meta-data/", "is not allowed"),
        ("file:///etc/passwd", "scheme 'file' is not allowed"),
        ("gopher://api.example.com/", "scheme 'gopher' is not allowed"),
        ("https://user:pw@api.example.com/", "credentials in the URL"),
        ("https://api.example.com:8443/", "api.example.com:8443 is not allowed"),
        ("not a url", "is not allowed"),
    ],
)
def test_it_refuses_urls_the_settings_do_not_allow_naming_request_url(url: str, why: str) -> None:
    with allow("api.example.com:443", "*.internal.example"):
        field, message = refused_field({"url": url})
    assert field == "request.url"
    assert why in message


def test_it_refuses_everything_when_the_allowlist_is_empty() -> None:
    with allow():
        field, message = refused_field({"url": "https://api.example.com/"})
    assert (field, "OUTBOUND_ALLOWED_HOSTS" in message) == ("request.url", True)


def test_it_matches_names_wildcards_ports_and_ip_literals() -> None:
    with allow("api.example.com", "*.internal.example", "127.0.0.1:8080", "[::1]:9000", "10.0.0.5"):
        for url in [
            "https://API.example.com./x",
            "http://api.example.com:8080/",
            "https://billing.internal.example/",
            "https://a.b.internal.example/",
            "http://127.0.0.1:8080/",
            "http://[::1]:9000/",
            "http://10.0.0.5:1234/",
        ]:
            assert outbound.check_url(url).scheme in ("http", "https"), url
        for url in [
            "https://internal.example/",
            "https://internal.example.evil.com/",
            "http://127.0.0.1:8081/",
            "http://[::1]:9001/",
            "http://api.example.com.evil.com/",
        ]:
            with pytest.raises(outbound.UrlRefused):
                outbound.check_url(url)


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"url": "https://api.example.com/", "headers": {"Host": "other.example"}}, "request.headers"),
        ({"url": "https://api.example.com/", "headers": {"X-A": "b\r\nInjected: 1"}}, "request.headers"),
        ({"url": "https://api.example.com/", "method": "TRACE"}, "request.method"),
        ({"url": "https://api.example.com/", "timeout_s": 0}, "request.timeout_s"),
        ({"url": "https://api.example.com/", "success_statuses": [99]}, "request.success_statuses[0]"),
        ({"url": "https://api.example.com/", "body": float("nan")}, "request.body"),
        ({"url": "https://api.example.com/", "extra": 1}, "request.extra"),
        ({}, "request.url"),
    ],
)
def test_it_names_the_field_of_a_bad_request(data: dict[str, Any], field: str) -> None:
    with allow("api.example.com"):
        assert refused_field(data)[0] == field


# --- executing -------------------------------------------------------------------------------------------


def test_it_calls_an_allowed_local_server(target: Target) -> None:
    target.script(Answer(201, {"id": 7}))
    req = outbound.parse_request(
        {
            "method": "POST",
            "url": target.url("/things?x=1"),
            "headers": {"Authorization": "Bearer s3cret"},
            "body": {"name": "a"},
        }
    )
    result = outbound.execute(req)
    assert (result.ok, result.status_code, result.body, result.error) == (True, 201, {"id": 7}, None)
    assert result.duration_ms > 0
    [seen] = target.seen
    assert (seen.method, seen.path, seen.body) == ("POST", "/things?x=1", b'{"name":"a"}')
    assert seen.headers["Host"] == target.host
    assert seen.headers["Authorization"] == "Bearer s3cret"
    assert seen.headers["Content-Type"] == "application/json"


def test_it_sends_a_text_body_as_it_is_and_reads_text_answers(target: Target) -> None:
    target.script(Answer(200, "plain answer"))
    result = outbound.execute(OutboundRequest("PUT", target.url("/t"), {}, "raw text"))
    assert (result.ok, result.body) == (True, "plain answer")
    assert target.seen[0].body == b"raw text"


@pytest.mark.django_db
def test_it_reports_a_failed_status_with_its_retry_after(target: Target) -> None:
    target.script(Answer(429, {"error": "slow down"}, {"Retry-After": "7"}))
    result = outbound.execute(OutboundRequest("GET", target.url("/")))
    assert (result.ok, result.status_code, result.body) == (False, 429, {"error": "slow down"})
    assert result.error == ErrorReport(
        type_name="HTTPStatusError",
        message='HTTP 429 Too Many Requests: {"error": "slow down"}',
        status_code=429,
        retry_after_s=7.0,
    )
    verdict = classify_report(result.error).verdict
    assert (verdict.error_class, verdict.retryable) == ("rate_limit", True)


def test_it_treats_statuses_outside_the_success_list_as_failures(target: Target) -> None:
    target.script(Answer(200, {"ok": True}))
    result = outbound.execute(OutboundRequest("GET", target.url("/"), success_statuses=(201,)))
    assert (result.ok, result.status_code, result.error and result.error.status_code) == (False, 200, 200)


def test_it_does_not_follow_redirects(target: Target) -> None:
    target.script(Answer(302, "", {"Location": "http://169.254.169.254/latest/meta-data/"}))
    result = outbound.execute(OutboundRequest("GET", target.url("/go")))
    assert (result.ok, result.status_code) == (False, 302)
    assert [s.path for s in target.seen] == ["/go"]


def test_it_stops_reading_a_body_over_the_limit(target: Target) -> None:
    target.script(Answer(200, b"x" * 200_000))
    with allow(target.host, OUTBOUND_MAX_RESPONSE_BYTES=4096):
        result = outbound.execute(OutboundRequest("GET", target.url("/big")))
    assert (result.ok, result.status_code, result.body) == (False, 200, None)
    assert result.error is not None
    assert result.error.type_name == "rebound.ResponseTooLarge"
    assert "larger than 4096 bytes" in result.error.message


@pytest.mark.django_db
def test_it_times_out_and_says_so(target: Target) -> None:
    target.script(Answer(200, {"late": True}, delay_s=1.5))
    result = outbound.execute(OutboundRequest("GET", target.url("/slow"), timeout_s=0.2))
    assert (result.ok, result.status_code) == (False, None)
    assert result.error is not None and result.error.type_name == "httpx.ReadTimeout"
    assert classify_report(result.error).verdict.kind == "connection_timeout"


@pytest.mark.django_db
def test_it_reports_a_refused_connection_as_transient() -> None:
    port = free_port()  # nothing listens there
    with allow(f"127.0.0.1:{port}"):
        result = outbound.execute(OutboundRequest("GET", f"http://127.0.0.1:{port}/"))
    assert (result.ok, result.status_code) == (False, None)
    assert result.error is not None and result.error.type_name == "httpx.ConnectError"
    verdict = classify_report(result.error).verdict
    assert (verdict.error_class, verdict.kind, verdict.retryable) == ("transient", "connection_failed", True)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("169.254.169.254", "link-local"),
        ("fd00:ec2::254", "cloud metadata"),
        ("100.100.100.200", "cloud metadata"),
        ("::ffff:169.254.169.254", "link-local"),
        ("127.0.0.1", "loopback, reached through a name"),
        ("0.0.0.0", "unspecified"),
    ],
)
def test_it_refuses_a_name_that_resolves_to_a_forbidden_address(
    target: Target, monkeypatch: Any, address: str, why: str
) -> None:
    # DNS is outside this machine: a name answering a metadata address is what a rebinding attack looks like.
    monkeypatch.setattr(outbound, "resolve", lambda host, port: ["93.184.216.34", address])
    with allow("api.example.com"):
        result = outbound.execute(OutboundRequest("GET", "http://api.example.com/"))
    assert (result.ok, result.status_code) == (False, None)
    assert result.error is not None and result.error.type_name == "rebound.PermissionDenied"
    assert f"resolves to {address}" in result.error.message and why in result.error.message
    verdict = classify_report(result.error).verdict
    assert (verdict.kind, verdict.needs_human, verdict.retryable) == ("permission_denied", True, False)
    assert target.seen == []


def test_it_allows_a_forbidden_address_only_when_that_exact_ip_is_allowlisted() -> None:
    with allow("metadata.example"):
        assert outbound.refusal("169.254.169.254", "metadata.example") is not None
    with allow("metadata.example", "169.254.169.254"):
        assert outbound.refusal("169.254.169.254", "metadata.example") is None
        assert outbound.refusal("169.254.169.253", "metadata.example") is not None
    with allow("localhost:8080"):
        assert outbound.refusal("127.0.0.1", "localhost") is None


def test_it_checks_the_allowlist_again_when_the_call_is_made(target: Target) -> None:
    req = outbound.parse_request({"url": target.url("/")})
    with allow("api.example.com"):
        result = outbound.execute(req)
    assert result.error is not None and result.error.type_name == "rebound.PermissionDenied"
    assert "is not allowed" in result.error.message
    assert target.seen == []


def test_it_redacts_secrets_in_headers_and_query_strings() -> None:
    headers = {
        "Authorization": "Bearer x",
        "Cookie": "a=b",
        "X-Api-Key": "k",
        "X-Auth-Token": "t",
        "Idempotency-Key": "idem-1",
        "Accept": "application/json",
    }
    assert outbound.redact_headers(headers) == {
        "Authorization": "[redacted]",
        "Cookie": "[redacted]",
        "X-Api-Key": "[redacted]",
        "X-Auth-Token": "[redacted]",
        "Idempotency-Key": "idem-1",
        "Accept": "application/json",
    }
    assert (
        outbound.redact_url("https://h.example/p?q=1&api_key=abc&token=t#f")
        == "https://h.example/p?q=1&api_key=%5Bredacted%5D&token=%5Bredacted%5D#f"
    )
    assert outbound.redact_url("https://h.example/p?q=1") == "https://h.example/p?q=1"


# --- registered tasks ------------------------------------------------------------------------------------


def test_it_refuses_tasks_that_are_not_registered() -> None:
    for name in ["os.system", "recovery.tasks.prune_error_events", "recovery.demo_tasks.nope"]:
        with pytest.raises(InvalidInput) as caught:
            task_registry.validate_task(name, [], {})
        assert caught.value.errors[0]["field"] == "task.name"


def test_it_accepts_tasks_listed_in_the_setting_and_the_builtin_ones() -> None:
    task_registry.validate_task("recovery.demo_tasks.echo", [1, "a"], {"k": {"n": None}})
    with override_settings(REBOUND=rebound_settings(REGISTERED_TASKS=["recovery.tasks.prune_error_events"])):
        task_registry.validate_task("recovery.tasks.prune_error_events", [], {}, field_prefix="compensation")
        assert "recovery.tasks.prune_error_events" in task_registry.registered()
    with (
        override_settings(REBOUND=rebound_settings(REGISTERED_TASKS=["recovery.nowhere.task"])),
        pytest.raises(InvalidInput) as caught,
    ):
        task_registry.validate_task("recovery.nowhere.task", [], {}, field_prefix="compensation")
    assert caught.value.errors[0] == {
        "field": "compensation.name",
        "message": "'recovery.nowhere.task' is registered but no such Celery task can be loaded",
    }


@pytest.mark.parametrize(
    ("args", "kwargs", "field"),
    [
        ({"not": "a list"}, {}, "task.args"),
        ([], ["not", "a dict"], "task.kwargs"),
        ([float("inf")], {}, "task.args"),
        ([], {"when": object()}, "task.kwargs"),
        (["x" * 70_000], {}, "task.args"),
    ],
)
def test_it_refuses_arguments_that_are_not_json(args: Any, kwargs: Any, field: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        task_registry.validate_task("recovery.demo_tasks.echo", args, kwargs)
    assert caught.value.errors[0]["field"] == field


def test_it_runs_a_registered_task_here() -> None:
    result = task_registry.run("recovery.demo_tasks.echo", [1, "a"], {"k": True})
    assert (result.ok, result.value, result.error) == (True, {"args": [1, "a"], "kwargs": {"k": True}}, None)
    assert result.duration_ms >= 0


@pytest.mark.redis
def test_it_runs_the_flaky_demo_task_until_it_succeeds() -> None:
    kwargs = {"key": "outbound-flaky", "failures": 2, "error": "TimeoutError", "value": "v"}
    first = task_registry.run("recovery.demo_tasks.flaky", [], kwargs)
    second = task_registry.run("recovery.demo_tasks.flaky", [], kwargs)
    third = task_registry.run("recovery.demo_tasks.flaky", [], kwargs)
    assert (first.ok, second.ok, third.ok) == (False, False, True)
    assert first.error == ErrorReport(
        type_name="TimeoutError", message="flaky 'outbound-flaky': failing call 1 of 2"
    )
    assert third.value == {"call": 3, "value": "v"}
    assert demo_tasks.flaky_calls("outbound-flaky") == 3


def test_it_names_exception_types_as_the_classifier_reads_them() -> None:
    class QuotaError(Exception):
        status_code = 429
        retry_after = 12

    report = task_registry.error_report(QuotaError("over quota"))
    assert report == ErrorReport(
        type_name=f"{__name__}.test_it_names_exception_types_as_the_classifier_reads_them.<locals>.QuotaError",
        message="over quota",
        status_code=429,
        retry_after_s=12.0,
    )
    assert task_registry.error_report(ConnectionError()).type_name == "ConnectionError"
    assert task_registry.error_report(ConnectionError()).message == "ConnectionError"


# --- TLS through the pinned address ----------------------------------------------------------------------


def _certificate(tmp_path: Path, name: str) -> tuple[Path, Path]:
    key, cert = tmp_path / f"{name}.key", tmp_path / f"{name}.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-keyout", str(key), "-out", str(cert), "-subj", f"/CN={name}"),
            *("-addext", f"subjectAltName=DNS:{name}"),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


@pytest.fixture
def tls_target(tmp_path: Path) -> Iterator[tuple[int, list[str], list[str], Path]]:
    """An HTTPS server on 127.0.0.1 with a certificate for api.example.com: (port, SNI names, Host headers, CA)."""
    cert, key = _certificate(tmp_path, "api.example.com")
    names: list[str] = []
    hosts: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hosts.append(self.headers["Host"])
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = QuietServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(cert), str(key))
    context.sni_callback = lambda sock, name, ctx: names.append(name)  # type: ignore[assignment,misc,return-value]
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    try:
        yield int(server.server_address[1]), names, hosts, cert
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.slow
def test_it_connects_to_the_checked_address_and_verifies_tls_against_the_name(
    tls_target: tuple[int, list[str], list[str], Path], monkeypatch: Any
) -> None:
    port, names, hosts, ca = tls_target
    # DNS says api.example.com is 127.0.0.1 (allowlisted by IP); the client trusts the test certificate only.
    monkeypatch.setattr(outbound, "resolve", lambda host, p: ["127.0.0.1"])
    trusting = httpx.Client(verify=ssl.create_default_context(cafile=str(ca)), trust_env=False)
    monkeypatch.setattr(outbound, "_client", lambda: trusting)
    with allow(f"api.example.com:{port}", f"other.example.com:{port}", "127.0.0.1"):
        result = outbound.execute(OutboundRequest("GET", f"https://api.example.com:{port}/"))
        wrong_name = outbound.execute(OutboundRequest("GET", f"https://other.example.com:{port}/"))
    assert (result.ok, result.status_code, result.body) == (True, 200, "ok")
    assert hosts == [f"api.example.com:{port}"]
    assert names[0] == "api.example.com"
    # The certificate is checked against the name asked for, not the address connected to.
    assert wrong_name.error is not None and wrong_name.error.type_name == "httpx.ConnectError"
    assert "CERTIFICATE_VERIFY_FAILED" in wrong_name.error.message
