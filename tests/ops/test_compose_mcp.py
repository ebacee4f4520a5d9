"""The MCP server's process in the production compose file and in the embedded mode's Procfile (`make run`).
No Docker: the files are read as they are; tests/ops/test_compose.py covers the rest of the setup."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]


def _compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_it_runs_the_mcp_server_from_the_apps_image_and_environment() -> None:
    compose = _compose()
    mcp, web = compose["services"]["mcp"], compose["services"]["web"]
    assert (mcp["image"], mcp["build"]) == (web["image"], web["build"])
    shared = compose["x-app-env"]
    assert {key: mcp["environment"][key] for key in shared} == shared
    assert mcp["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}
    assert mcp["command"] == [
        "python", "manage.py", "mcp", "--transport", "http", "--host", "0.0.0.0", "--port", "8001",
    ]  # fmt: skip


def test_it_publishes_the_mcp_port_and_announces_its_url() -> None:
    mcp = _compose()["services"]["mcp"]
    assert mcp["ports"] == ["${REBOUND_MCP_PORT:-8001}:8001"]
    assert mcp["environment"]["MCP_PUBLIC_URL"] == "${MCP_PUBLIC_URL:-http://localhost:8001/mcp}"


def test_it_checks_the_mcp_servers_health_on_its_own_port() -> None:
    check = _compose()["services"]["mcp"]["healthcheck"]
    assert check["test"][:3] == ["CMD", "python", "-c"]
    assert "http://127.0.0.1:8001/healthz" in check["test"][3]


def test_it_shares_the_metrics_folder_with_web() -> None:
    services = _compose()["services"]
    assert services["mcp"]["volumes"] == services["web"]["volumes"]
    assert services["mcp"]["environment"]["PROMETHEUS_MULTIPROC_DIR"] == "/var/run/rebound/metrics"


def test_it_runs_the_mcp_server_in_the_embedded_mode_on_mcp_port() -> None:
    lines = (ROOT / "Procfile.embedded").read_text().splitlines()
    assert "mcp: python manage.py mcp --transport http --port $MCP_PORT" in lines
    run = (ROOT / "scripts" / "run").read_text()
    assert re.search(r"^export MCP_PORT=\$\{MCP_PORT:-\$\(\(PORT \+ 1\)\)\}$", run, re.MULTILINE)
    assert "http://127.0.0.1:${MCP_PORT}/mcp" in run
