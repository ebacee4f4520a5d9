"""Every documented example that calls the API works, in both modes (docs/*.md; tests/docs/examples.py says what
an example is and how its answer is checked).

Each mode runs a real Rebound: gunicorn with two workers and a Celery worker with two processes, as `make run`
and docker-compose do; the embedded mode on SQLite with the folder broker, the production mode on this run's
PostgreSQL database and Redis db. The docs' outside hosts (`billing.internal.example`) are one local stand-in
that answers the first request of each Idempotency-Key with a 503 and the next with a 201, as the examples tell.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.docs import examples
from tests.docs.examples import Block, Command, Example, Namespace, Stage
from tests.support.processes import PYTHON, ROOT, free_port, process_env, start, stop, wait_for, wait_http

# The hosts the docs' examples call, and the scheme they use there.
OUTSIDE_HOSTS = ("https://billing.internal.example", "http://billing.internal.example")
# Where the docs' MCP examples reach the MCP server (its default address).
MCP_DOCS_URL = "http://127.0.0.1:8001"
# The docs that must show the API at work: each has at least one example that calls it.
API_DOCS = (
    "checkpoints.md",
    "escalations.md",
    "healing.md",
    "health-checks.md",
    "recovery.md",
    "retries.md",
    "sagas.md",
    "sdk.md",
)
KEYS_SCRIPT = """
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from core.access import services as access
from core.access.roles import OPERATORS
from core.audit.models import AuditEvent
from core.audit.services import Actor
cli = Actor(source=AuditEvent.Source.CLI)
agent = access.create_agent(actor=cli, name="docs-agent", description="docs examples")
_, agent_key = access.issue_key(actor=cli, agent=agent, name="docs")
user = get_user_model().objects.create_user("docs-operator", password="docs-operator", is_staff=True)
user.groups.add(Group.objects.get(name=OPERATORS))
_, operator_key = access.issue_key(actor=Actor(user=user, source=AuditEvent.Source.CLI), user=user, name="docs")
print(agent_key)
print(operator_key)
"""

# The test that runs the examples: real processes on this run's PostgreSQL database and Redis db.
SERVERS = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis, pytest.mark.django_db(transaction=True)]


# --- the docs' outside world ------------------------------------------------------------------------------


class StandIn:
    """The billing API of the examples: a 503 for the first request of each Idempotency-Key, then a 201."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, str]] = []
        self.lock = threading.Lock()
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                key = self.headers.get("Idempotency-Key", "")
                with stand_in.lock:
                    first = bool(key) and not any(k == key for _, _, k in stand_in.seen)
                    stand_in.seen.append((self.command, self.path, key))
                status, body = (503, {"error": "try again"}) if first else (201, {"id": "re_1", "ok": True})
                payload = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _answer

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def stand_in() -> Iterator[StandIn]:
    server = StandIn()
    yield server
    server.close()


# --- a real Rebound in either mode ----------------------------------------------------------------------


def _embedded_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The embedded mode as `make run` has it: no server but this one, SQLite and the broker in DATA_DIR."""
    dropped = ("PYTEST", "DJANGO_SETTINGS", "DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "REBOUND_MODE")
    env = {k: v for k, v in os.environ.items() if not k.startswith(dropped)}
    env.update(
        REBOUND_MODE="embedded", DJANGO_SETTINGS_MODULE="config.settings", DATA_DIR=str(tmp_path / "data")
    )
    env.update(extra)
    return env


def _manage(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [PYTHON, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@contextmanager
def running_rebound(mode: str, tmp_path: Path, stand_in: StandIn) -> Iterator[Stage]:
    port = free_port()
    settings = {
        "OUTBOUND_ALLOWED_HOSTS": stand_in.host,
        "GUNICORN_BIND": f"127.0.0.1:{port}",
        "GUNICORN_WORKERS": "2",
        "GUNICORN_THREADS": "4",
        "INTAKE_REQUIRE_DURABLE_REDIS": "false",  # the machine's Redis keeps nothing on disk
        # The SDK examples' clients long-poll; short polls let gunicorn stop at once when the examples are done.
        "BREAKER_EVENTS_MAX_WAIT_SECONDS": "1",
    }
    if mode == "embedded":
        env = _embedded_env(tmp_path, **settings)
        _manage(env, "migrate", "--noinput", "-v", "0")
    else:
        env = process_env(tmp_path, **settings)  # this run's PostgreSQL database, already migrated
    agent_key, operator_key = _manage(env, "shell", "-c", KEYS_SCRIPT).split()[-2:]
    web = start(
        [PYTHON, "-m", "gunicorn", "-c", "config/gunicorn.conf.py", "config.wsgi"], env, tmp_path / "web.log"
    )
    # The MCP server over streamable HTTP (docs/mcp.md's client example), as make run's Procfile starts it.
    mcp_port = free_port()
    mcp = start(
        [PYTHON, "manage.py", "mcp", "--transport", "http", "--port", str(mcp_port)],
        env,
        tmp_path / "mcp.log",
    )
    worker_log = tmp_path / "worker.log"
    worker = start(
        [PYTHON, "-m", "celery", "-A", "config", "worker", "-l", "INFO", "--concurrency", "2"],
        env,
        worker_log,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", timeout=60)
        wait_http(f"http://127.0.0.1:{mcp_port}/healthz", timeout=60)
        assert wait_for(lambda: " ready." in worker_log.read_text(), timeout=60), worker_log.read_text()[
            -3000:
        ]
        local = f"http://{stand_in.host}"
        yield Stage(
            base_url=f"http://127.0.0.1:{port}",
            env={
                "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                "KEY": agent_key,
                "OPERATOR_KEY": operator_key,
            },
            agent_key=agent_key,
            hosts={**dict.fromkeys(OUTSIDE_HOSTS, local), MCP_DOCS_URL: f"http://127.0.0.1:{mcp_port}"},
        )
    finally:
        stop(worker)
        stop(mcp)
        stop(web)


def run_all(stage: Stage, found: list[Example]) -> list[str]:
    problems: list[str] = []
    namespaces: dict[str, tuple[Namespace, dict[str, Any]]] = {}
    for example in found:
        stage.bound = {}
        if example.language == "sh":
            problems += examples.run_shell(stage, example)
            continue
        namespace, globals_ = namespaces.setdefault(example.doc, (Namespace(), {"__name__": "docs_example"}))
        problems += examples.run_python(stage, example, namespace, globals_)
    for namespace, _ in namespaces.values():
        examples.close_clients(namespace, lambda client: client.close())
    return problems


@pytest.mark.parametrize("mode", [pytest.param(mode, marks=SERVERS) for mode in ("embedded", "production")])
def test_the_docs_examples_work(mode: str, tmp_path: Path, stand_in: StandIn) -> None:
    found = examples.every_example()
    with running_rebound(mode, tmp_path, stand_in) as stage:
        problems = run_all(stage, found)
    assert problems == [], f"{mode} mode:\n" + "\n".join(problems)


# --- reading the docs (no server) -------------------------------------------------------------------------


@pytest.mark.parametrize("doc", API_DOCS)
def test_each_doc_of_the_api_has_an_example_that_calls_it(doc: str) -> None:
    assert examples.read(examples.DOCS / doc), f"docs/{doc} has no example that calls the API"


def test_it_reads_a_command_its_multi_line_body_and_its_expected_answer() -> None:
    block = Block(
        "sh",
        1,
        '# Save\ncurl -X POST http://127.0.0.1:8000/api/v1/x -H "A: $KEY" \\\n  -d \'{"a": 1,\n  "b": 2}\'\n'
        '# 201 {"id": "0d5c…", "n": 2,\n#  "ok": true}\n\n# Then\ncurl http://127.0.0.1:8000/api/v1/x/0d5c…',
        None,
    )

    found = examples.commands(block)

    assert [(c.method, c.line) for c in found] == [("POST", 3), ("GET", 10)]
    assert found[0].text.endswith('"b": 2}\'')
    want = examples.expected(found[0].expected or "")
    assert (want.status, want.pairs) == (201, [("id", "0d5c…"), ("n", 2), ("ok", True)])
    assert found[1].expected is None


def test_it_checks_an_answer_loosely_and_binds_shortened_values() -> None:
    want = examples.expected(
        '201 {"id": "0d5c…", "state": "pending", "sha256": "…", "headers": {"A": "[x]"}}'
    )
    answer = {"id": "0d5c9a", "state": "pending", "sha256": "ab", "request": {"headers": {"A": "[x]"}}}

    assert examples.mismatches(want, 201, answer) == []
    assert examples.mismatches(want, 200, answer) == ["status 200, the docs say 201"]
    assert examples.bindings(want, answer) == {"0d5c…": "0d5c9a"}
    stage = Stage(
        "http://s:1", {}, "k", {"https://billing.internal.example": "http://l:2"}, {"0d5c…": "0d5c9a"}
    )
    command = Command("curl http://127.0.0.1:8000/api/v1/r/0d5c… https://billing.internal.example/x", 1)
    assert stage.rewrite(command.text) == "curl http://s:1/api/v1/r/0d5c9a http://l:2/x"
