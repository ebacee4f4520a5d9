"""What the SDK's tests share (no tests here): a real production gunicorn on the test database, which can be
stopped and started again on the same port, a transport that records the SDK's requests, and rows to check.

The fixtures `server` (one running gunicorn per test module) and `clients` (clients closed after the test) are
used by importing them as `from tests.support.sdk_server import server as server` (the explicit re-export tells
ruff the import is meant, though only pytest reads it)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from rebound_client import Client
from recovery.breakers.models import BreakerTransition, Service
from tests.support import factories
from tests.support.processes import PYTHON, ROOT, free_port, process_env, wait_for, wait_http

# A guarded call's effects reach the server within a flush (0.2 s) and the view within a long-poll's wake-up;
# these bounds are generous on purpose: a loaded CI machine must not make the tests flaky.
WITHIN_S = 20.0
QUIET = {"consecutive_failures": 0, "minimum_calls": 100, "window_size": 100}  # never trips by itself


class SdkServer:
    """gunicorn with gthread workers (long-polls hold a thread each), production settings, synchronous intake
    (error rows are written in the request, so a test can count them without a Celery worker)."""

    def __init__(self, tmp_path: Path, workers: int = 2, threads: int = 24) -> None:
        self.port = free_port()
        self.log = tmp_path / "gunicorn.log"
        self.env = process_env(
            tmp_path,
            GUNICORN_BIND=f"127.0.0.1:{self.port}",
            GUNICORN_WORKERS=str(workers),
            GUNICORN_THREADS=str(threads),
            INTAKE_MODE="sync",
            LOG_LEVEL="WARNING",
            BREAKER_EVENTS_MAX_WAIT_SECONDS="25",
        )
        self.process: subprocess.Popen[Any] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> SdkServer:
        # Its own process group, so that stop() reaches the master and every worker at once.
        self.process = subprocess.Popen(
            [PYTHON, "-m", "gunicorn", "-c", "config/gunicorn.conf.py", "config.wsgi"],
            cwd=ROOT,
            env=self.env,
            stdout=self.log.open("a"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_http(f"{self.url}/healthz", timeout=60)
        return self

    def stop(self) -> None:
        """Gone at once, as a crashed host is. (gunicorn's own shutdown, even its quick one, waits for the
        requests in flight, and a client's long-poll lasts 25 s.)"""
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)
            self.process = None

    def tail(self) -> str:
        return self.log.read_text()[-3000:] if self.log.exists() else ""


class _Requests:
    """What the recording transports write down: each request's method and path."""

    requests: list[tuple[str, str]]

    def count(self, method: str, suffix: str) -> int:
        return sum(1 for m, path in self.requests if m == method and path.endswith(suffix))


class Recording(httpx.HTTPTransport, _Requests):
    """The real transport, writing down each request's method and path."""

    def __init__(self) -> None:
        super().__init__()
        self.requests = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append((request.method, request.url.path))
        return super().handle_request(request)


class AsyncRecording(httpx.AsyncHTTPTransport, _Requests):
    def __init__(self) -> None:
        super().__init__()
        self.requests = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append((request.method, request.url.path))
        return await super().handle_async_request(request)


@pytest.fixture(scope="module")
def server(
    django_db_setup: Any, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[SdkServer]:
    """One running server for the test module (its log in a scratch folder named after the module)."""
    folder = tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1])
    running = SdkServer(Path(folder)).start()
    yield running
    running.stop()


@pytest.fixture
def clients(server: SdkServer) -> Iterator[Callable[..., Client]]:
    """Makes sync clients of `server`, each closed after the test."""
    made: list[Client] = []

    def make(key: str, **options: Any) -> Client:
        client = Client(server.url, key, **options)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close(timeout_s=2)


def agent_key() -> str:
    return factories.agent_key()[1]


def operator_key() -> str:
    return factories.user_key(factories.operator())


def service(name: str, **settings: Any) -> Service:
    """A registered service with small settings: five calls decide, one consecutive failure less than that."""
    defaults: dict[str, Any] = {"window_size": 10, "minimum_calls": 5, "consecutive_failures": 3}
    return Service.objects.create(name=name, **{**defaults, **settings})


def transitions(name: str) -> list[tuple[str, str]]:
    rows = BreakerTransition.objects.filter(service__name=name).order_by("id")
    return [(t.from_state, t.to_state) for t in rows]


def eventually(predicate: Callable[[], bool], what: str, timeout: float = WITHIN_S) -> None:
    assert wait_for(predicate, timeout=timeout, interval=0.05), f"not within {timeout:g} s: {what}"


def override(base_url: str, key: str, name: str, mode: str) -> dict[str, Any]:
    answer = httpx.post(
        f"{base_url}/api/v1/breakers/{name}/override",
        json={"mode": mode, "reason": "provider incident INC-7"},
        headers={"Authorization": f"Bearer {key}"},
        timeout=10,
    )
    assert answer.status_code == 200, answer.text
    data: dict[str, Any] = answer.json()
    return data


def breaker(base_url: str, key: str, name: str) -> dict[str, Any]:
    answer = httpx.get(
        f"{base_url}/api/v1/breakers/{name}", headers={"Authorization": f"Bearer {key}"}, timeout=10
    )
    assert answer.status_code == 200, answer.text
    data: dict[str, Any] = answer.json()
    return data


class Flaky:
    """A callable that raises the given errors in turn, then returns `value`."""

    def __init__(self, *errors: BaseException, value: Any = "ok") -> None:
        self.errors = list(errors)
        self.value = value
        self.calls = 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return self.value


def http_error(
    status: int, headers: dict[str, str] | None = None, message: str = ""
) -> httpx.HTTPStatusError:
    request = httpx.Request("POST", "https://api.provider.example/v1/run")
    response = httpx.Response(status, headers=headers or {}, request=request)
    return httpx.HTTPStatusError(message or f"HTTP {status}", request=request, response=response)
