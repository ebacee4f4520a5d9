"""The production container setup: docker-compose.yml, the Dockerfile and the entrypoint script.

No Docker and no database needed: the compose file is read as YAML, the entrypoint runs against stub commands.
"""

from __future__ import annotations

import http.server
import importlib
import os
import re
import shutil
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml
from pydantic import ValidationError

from config.env import Env
from tests.support.processes import free_port, wait_for

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
ENTRYPOINT = ROOT / "scripts" / "docker-entrypoint.sh"

APP_SERVICES = ("migrate", "web", "worker", "beat")
LONG_RUNNING = ("web", "worker", "beat")
METRICS_DIR = "/var/run/rebound/metrics"
SECRET = "s" * 50


def _compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def _services() -> dict[str, Any]:
    return _compose()["services"]


_VARIABLE = re.compile(r"\$\$|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")


def _interpolate(value: str, environ: dict[str, str]) -> str:
    """Compose's variable substitution: ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}, $$."""

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, op, arg = match.group("name"), match.group("op"), match.group("arg")
        current = environ.get(name)
        missing = current is None or (current == "" and op is not None and op.startswith(":"))
        if op in (":-", "-"):
            return arg if missing else str(current)
        if op in (":?", "?"):
            if missing:
                raise KeyError(f"{name}: {arg}")
            return str(current)
        return current or ""

    return _VARIABLE.sub(substitute, value)


def _app_environment(service: str, environ: dict[str, str]) -> dict[str, str]:
    raw = _services()[service]["environment"]
    return {key: _interpolate(str(value), environ) for key, value in raw.items()}


# --- docker-compose.yml ---------------------------------------------------------------------------------


def test_it_parses_the_compose_file_with_every_service() -> None:
    services = _services()
    assert {"postgres", "redis", *APP_SERVICES} <= set(services)


def test_it_runs_every_app_service_from_one_image_and_one_environment() -> None:
    compose = _compose()
    services = compose["services"]
    shared_env = compose["x-app-env"]
    assert shared_env["REBOUND_MODE"] == "production"
    images = {(services[name]["build"], services[name]["image"]) for name in APP_SERVICES}
    assert images == {(".", "${REBOUND_IMAGE:-rebound:latest}")}
    for name in APP_SERVICES:
        env = services[name]["environment"]
        assert {key: env[key] for key in shared_env} == shared_env, name
        assert services[name]["command"] == [name]


def test_it_shares_the_environment_through_a_yaml_anchor() -> None:
    text = COMPOSE.read_text()
    assert "x-app-env: &app-env" in text
    assert text.count("*app-env") >= 2  # the x-app block and the web override


def test_it_has_no_default_secret_key() -> None:
    shared_env = _compose()["x-app-env"]
    assert re.fullmatch(r"\$\{SECRET_KEY:\?[^}]+\}", shared_env["SECRET_KEY"])
    with pytest.raises(KeyError, match="SECRET_KEY"):
        _app_environment("web", {})
    with pytest.raises(KeyError, match="SECRET_KEY"):
        _app_environment("web", {"SECRET_KEY": ""})


@pytest.mark.parametrize("name", LONG_RUNNING)
def test_it_starts_app_services_after_healthy_servers_and_the_migration(name: str) -> None:
    depends_on = _services()[name]["depends_on"]
    assert depends_on["postgres"]["condition"] == "service_healthy"
    assert depends_on["redis"]["condition"] == "service_healthy"
    assert depends_on["migrate"]["condition"] == "service_completed_successfully"


def test_it_migrates_once_after_the_servers_are_healthy() -> None:
    services = _services()
    migrate = services["migrate"]
    assert migrate["depends_on"] == {
        "postgres": {"condition": "service_healthy"},
        "redis": {"condition": "service_healthy"},
    }
    # A one-shot service: unless-stopped would run it again and again.
    assert migrate["restart"] == "no"
    # The migrate service already ran them: web must not migrate again (nor concurrently when scaled).
    assert services["web"]["environment"]["MIGRATE_ON_START"] == "0"


def test_it_restarts_long_running_services_unless_stopped() -> None:
    services = _services()
    for name in ("postgres", "redis", *LONG_RUNNING):
        assert services[name]["restart"] == "unless-stopped", name


def _redis_options() -> dict[str, str]:
    command = _services()["redis"]["command"]
    assert command[0] == "redis-server"
    flags = command[1:]
    assert len(flags) % 2 == 0 and all(flag.startswith("--") for flag in flags[::2]), command
    return dict(zip(flags[::2], flags[1::2], strict=True))


def test_it_runs_redis_with_append_only_persistence_synced_every_second() -> None:
    # The buffered intake answers 201 once a report is in Redis: "accepted" must mean kept (issue 11, item 25).
    options = _redis_options()
    assert options["--appendonly"] == "yes"
    assert options["--appendfsync"] == "everysec"
    assert options["--maxmemory-policy"] == "noeviction"
    assert "redis-data:/data" in _services()["redis"]["volumes"]


@pytest.mark.slow
def test_it_keeps_every_acknowledged_write_of_the_compose_redis_through_a_kill(tmp_path: Path) -> None:
    """redis-server with the compose file's own options, killed with SIGKILL under writes and started again."""
    port = free_port()
    args = [
        shutil.which("redis-server") or "redis-server",
        *(item for pair in _redis_options().items() for item in pair),
        "--port", str(port), "--bind", "127.0.0.1", "--dir", str(tmp_path), "--logfile", str(tmp_path / "log"),
    ]  # fmt: skip

    def serve() -> subprocess.Popen[bytes]:
        server = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        assert wait_for(lambda: _pings(port), timeout=15), (tmp_path / "log").read_text()
        return server

    server = serve()
    acknowledged = 0
    try:
        with redis.Redis(port=port) as client:
            for _ in range(5000):
                acknowledged = int(client.incr("accepted"))
        server.kill()
        server.wait(timeout=10)
        server = serve()
        with redis.Redis(port=port) as client:
            assert int(client.get("accepted") or 0) == acknowledged == 5000
    finally:
        server.kill()
        server.wait(timeout=10)


def _pings(port: int) -> bool:
    try:
        with redis.Redis(port=port, socket_connect_timeout=0.5) as client:
            return bool(client.ping())
    except redis.ConnectionError:
        return False


def test_it_has_healthchecks_on_the_servers_and_web() -> None:
    services = _services()
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])
    assert services["redis"]["healthcheck"]["test"][-2:] == ["redis-cli", "ping"]
    assert services["web"]["healthcheck"]["test"] == ["CMD", "docker-entrypoint.sh", "healthcheck", "/readyz"]
    # The image's HTTP healthcheck means nothing for processes without an HTTP server.
    assert "inspect ping" in " ".join(services["worker"]["healthcheck"]["test"])
    assert services["beat"]["healthcheck"] == {"disable": True}
    assert services["migrate"]["healthcheck"] == {"disable": True}


def test_it_declares_volumes_for_data_and_metrics() -> None:
    compose = _compose()
    services = compose["services"]
    assert {"postgres-data", "redis-data", "metrics"} <= set(compose["volumes"])
    assert "postgres-data:/var/lib/postgresql/data" in services["postgres"]["volumes"]
    assert "redis-data:/data" in services["redis"]["volumes"]
    # web serves /metrics, so it must see the worker's samples: one shared folder.
    for name in ("web", "worker"):
        assert f"metrics:{METRICS_DIR}" in services[name]["volumes"], name
        assert services[name]["environment"]["PROMETHEUS_MULTIPROC_DIR"] == METRICS_DIR


def test_it_publishes_only_the_web_and_mcp_ports() -> None:
    services = _services()
    assert services["web"]["ports"] == ["${REBOUND_PORT:-8000}:8000"]
    assert services["mcp"]["ports"] == ["${REBOUND_MCP_PORT:-8001}:8001"]
    # The monitoring profile's Prometheus and Grafana publish theirs on 127.0.0.1 only (tests/ops/test_monitoring.py).
    others = [name for name in services if name not in ("web", "mcp") and "profiles" not in services[name]]
    assert all("ports" not in services[name] for name in others)


def test_it_gives_a_compose_environment_that_the_production_settings_accept(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in Env.model_fields:
        monkeypatch.delenv(name, raising=False)
    for key, value in _app_environment("web", {"SECRET_KEY": SECRET}).items():
        monkeypatch.setenv(key, value)

    env = Env(_env_file=None)  # type: ignore[call-arg]

    assert env.REBOUND_MODE == "production"
    assert env.SECRET_KEY == SECRET
    assert env.DATABASE_URL == "postgres://rebound:rebound@postgres:5432/rebound"
    assert env.REDIS_URL == "redis://redis:6379/0"
    assert env.broker_url == "redis://redis:6379/0"
    assert env.allowed_hosts == ["localhost", "127.0.0.1", "web"]  # web: the monitoring profile scrapes it
    assert env.LOG_FORMAT == "json"
    assert env.PROMETHEUS_MULTIPROC_DIR == METRICS_DIR
    assert not env.DEBUG


def test_it_refuses_the_compose_environment_with_a_short_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in Env.model_fields:
        monkeypatch.delenv(name, raising=False)
    for key, value in _app_environment("worker", {"SECRET_KEY": "too-short"}).items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ValidationError, match="SECRET_KEY"):
        Env(_env_file=None)  # type: ignore[call-arg]


# --- Dockerfile and .dockerignore -----------------------------------------------------------------------


def test_it_builds_a_non_root_slim_image_with_a_healthcheck_and_the_entrypoint() -> None:
    text = DOCKERFILE.read_text()
    lines = [line.strip() for line in text.splitlines()]
    assert lines[[line.startswith("FROM") for line in lines].index(True)] == "FROM python:3.11-slim"
    assert "pip install --no-deps ." in text
    assert "[dev]" not in text
    assert "collectstatic --noinput" in text
    assert "EXPOSE 8000" in lines
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users and users[-1] not in ("root", "0")
    assert 'CMD ["docker-entrypoint.sh", "healthcheck", "/healthz"]' in text
    assert 'ENTRYPOINT ["docker-entrypoint.sh"]' in lines
    assert "scripts/docker-entrypoint.sh /usr/local/bin/docker-entrypoint.sh" in text


def test_it_keeps_local_state_out_of_the_build_context_but_not_the_code() -> None:
    patterns = {line.strip() for line in DOCKERIGNORE.read_text().splitlines()}
    patterns.discard("")
    assert {".venv", "var", ".git", "bench/results", ".pytest_cache", "**/__pycache__"} <= patterns
    needed = {"pyproject.toml", "manage.py", "config", "recovery", "healing", "templates", "scripts"}
    assert not needed & patterns
    assert not any(pattern.startswith(("scripts", "config", "*.py", "*.toml")) for pattern in patterns)


# --- scripts/docker-entrypoint.sh -------------------------------------------------------------------------


@pytest.mark.slow
def test_it_ships_an_executable_entrypoint_that_bash_accepts() -> None:
    assert ENTRYPOINT.is_file()
    assert ENTRYPOINT.stat().st_mode & stat.S_IXUSR
    text = ENTRYPOINT.read_text()
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail" in text
    subprocess.run(["bash", "-n", str(ENTRYPOINT)], check=True)


def test_it_points_the_entrypoint_at_things_that_exist() -> None:
    text = ENTRYPOINT.read_text()
    assert "gunicorn -c config/gunicorn.conf.py config.wsgi" in text
    assert (ROOT / "config" / "gunicorn.conf.py").is_file()
    assert (ROOT / "manage.py").is_file()
    wsgi = importlib.import_module("config.wsgi")
    assert callable(wsgi.application)

    assert "celery -A config worker" in text
    assert "celery -A config beat" in text
    from celery.app.utils import find_app

    app = find_app("config")
    assert app.main == "rebound"
    from django.conf import settings

    assert (
        settings.CELERY_BEAT_SCHEDULER == "core.schedule.beat:ClaimingScheduler"
    )  # django-celery-beat's, claimed


def test_it_binds_gunicorn_to_the_exposed_port(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GUNICORN_BIND", raising=False)
    config: dict[str, Any] = {}
    source = (ROOT / "config" / "gunicorn.conf.py").read_text()
    exec(compile(source, "gunicorn.conf.py", "exec"), config)
    assert config["bind"] == "0.0.0.0:8000"
    assert callable(config["child_exit"])


@pytest.fixture
def stubs(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """python, gunicorn and celery replaced by scripts that log their arguments."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.log"
    for name in ("python", "gunicorn", "celery"):
        stub = bin_dir / name
        stub.write_text(f'#!/usr/bin/env bash\necho "{name} $*" >> "{log}"\n')
        stub.chmod(0o755)
    env = {
        "PATH": f"{bin_dir}{os.pathsep}/usr/bin{os.pathsep}/bin",
        "HOME": str(tmp_path),
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
    }
    return env, log


def _run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(ENTRYPOINT), *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=30, check=False
    )


@pytest.mark.slow
def test_it_migrates_then_serves_with_a_fresh_metrics_folder(stubs: tuple[dict[str, str], Path]) -> None:
    env, log = stubs
    metrics = Path(env["PROMETHEUS_MULTIPROC_DIR"])
    metrics.mkdir()
    (metrics / "counter_7.db").write_bytes(b"stale")

    result = _run(env, "web")

    assert result.returncode == 0, result.stderr
    assert log.read_text().splitlines() == [
        "python manage.py migrate --noinput",
        "gunicorn -c config/gunicorn.conf.py config.wsgi",
    ]
    assert metrics.is_dir()
    assert list(metrics.iterdir()) == []


@pytest.mark.slow
def test_it_serves_without_migrating_when_told_so(stubs: tuple[dict[str, str], Path]) -> None:
    env, log = stubs
    result = _run({**env, "MIGRATE_ON_START": "0"}, "web")
    assert result.returncode == 0, result.stderr
    assert log.read_text().splitlines() == ["gunicorn -c config/gunicorn.conf.py config.wsgi"]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "extra_env", "expected"),
    [
        (["worker"], {}, "celery -A config worker -l INFO --concurrency 2"),
        (["worker"], {"CELERY_CONCURRENCY": "8"}, "celery -A config worker -l INFO --concurrency 8"),
        (["beat"], {}, "celery -A config beat -l INFO"),
        (["migrate"], {}, "python manage.py migrate --noinput"),
        (["python", "manage.py", "check", "--deploy"], {}, "python manage.py check --deploy"),
    ],
)
def test_it_dispatches_on_the_role(
    stubs: tuple[dict[str, str], Path], args: list[str], extra_env: dict[str, str], expected: str
) -> None:
    env, log = stubs
    metrics = Path(env["PROMETHEUS_MULTIPROC_DIR"])

    result = _run({**env, **extra_env}, *args)

    assert result.returncode == 0, result.stderr
    assert log.read_text().splitlines() == [expected]
    assert metrics.is_dir()


@pytest.mark.slow
def test_it_keeps_the_worker_metrics_of_a_shared_folder(stubs: tuple[dict[str, str], Path]) -> None:
    env, _ = stubs
    metrics = Path(env["PROMETHEUS_MULTIPROC_DIR"])
    metrics.mkdir()
    (metrics / "counter_9.db").write_bytes(b"live")
    assert _run(env, "worker").returncode == 0
    assert (metrics / "counter_9.db").exists()


@pytest.mark.slow
def test_it_fails_when_the_role_fails(stubs: tuple[dict[str, str], Path]) -> None:
    env, log = stubs
    failing = Path(env["PATH"].split(os.pathsep)[0]) / "python"
    failing.write_text(f'#!/usr/bin/env bash\necho "python $*" >> "{log}"\nexit 3\n')
    result = _run(env, "web")
    assert result.returncode == 3
    assert log.read_text().splitlines() == ["python manage.py migrate --noinput"]  # gunicorn never started


class _Handler(http.server.BaseHTTPRequestHandler):
    status = 200
    seen: list[tuple[str, str | None]] = []

    def do_GET(self) -> None:
        type(self).seen.append((self.path, self.headers.get("Host")))
        self.send_response(type(self).status)
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def http_server() -> Iterator[tuple[int, type[_Handler]]]:
    handler = type("Handler", (_Handler,), {"status": 200, "seen": []})
    server = http.server.HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server.server_address[1], handler
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("allowed_hosts", "host"),
    [
        ("rebound.example.com,localhost", "rebound.example.com"),
        (".example.com", "example.com"),
        ("*", "localhost"),
        ("", "localhost"),
    ],
)
def test_it_checks_health_with_an_allowed_host(
    http_server: tuple[int, type[_Handler]], allowed_hosts: str, host: str
) -> None:
    port, handler = http_server
    python_dir = str(Path(sys.executable).parent)
    env = {
        "PATH": f"{python_dir}{os.pathsep}/usr/bin{os.pathsep}/bin",
        "GUNICORN_BIND": f"0.0.0.0:{port}",
        "ALLOWED_HOSTS": allowed_hosts,
    }
    assert shutil.which("python", path=env["PATH"])

    assert _run(env, "healthcheck", "/readyz").returncode == 0
    assert handler.seen == [("/readyz", host)]

    handler.status = 503
    result = _run(env, "healthcheck")
    assert result.returncode == 1
    assert handler.seen[-1][0] == "/healthz"
    assert "healthcheck /healthz" in result.stderr
