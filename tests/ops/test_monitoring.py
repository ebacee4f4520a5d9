"""The monitoring profile (issue 18, part 1): the Grafana dashboard, the Prometheus alert rules, their provisioning
in docker-compose.yml, and the metrics they stand on.

Every metric name a panel or a rule queries must be one Rebound exports on /metrics: the names are read out of
the PromQL and checked against the families /metrics announces (`# TYPE` lines, which a process prints for every
registered family, even one with no labelled sample yet), in this process and in a real gunicorn.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import yaml
from django.conf import settings
from django.test import Client, override_settings
from prometheus_client import REGISTRY

from healing.checks import metrics as check_metrics
from healing.checks import tasks as check_tasks
from recovery.errors import intake
from recovery.errors import services as error_services
from recovery.errors.classification import ErrorReport
from tests.support.factories import rebound_settings
from tests.support.processes import PYTHON, free_port, process_env, start, stop, wait_http

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "rebound.json"
RULES = ROOT / "deploy" / "prometheus" / "rebound-rules.yml"
PROMETHEUS = ROOT / "deploy" / "prometheus" / "prometheus.yml"
DATASOURCES = ROOT / "deploy" / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
DASHBOARD_PROVIDERS = ROOT / "deploy" / "grafana" / "provisioning" / "dashboards" / "rebound.yml"

# Series Prometheus makes itself for every target: not Rebound's to export.
PROMETHEUS_OWN = frozenset({"up"})
# What a family's samples may be called beside its own name (counters, histograms, summaries).
SUFFIXES = ("_total", "_created", "_bucket", "_sum", "_count")

# --- PromQL: the metric names an expression reads ------------------------------------------------------------

_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGES = re.compile(r"\[[^\]]*\]")
_GROUPINGS = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_VARIABLES = re.compile(r"\$\{?\w+\}?")
_DURATIONS = re.compile(r"\boffset\s+-?\w+")
_CALLS = re.compile(r"\b[a-zA-Z_][a-zA-Z0-9_]*(?=\s*\()")
_IDENTIFIERS = re.compile(r"(?<![\w.])[a-zA-Z_:][a-zA-Z0-9_:]*")
_KEYWORDS = frozenset(
    {"and", "or", "unless", "bool", "by", "without", "on", "ignoring", "group_left", "group_right", "offset"}
    | {"inf", "nan", "atan2"}
)


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: what is left once strings, label matchers, ranges,
    groupings, Grafana's variables, functions and keywords are taken out."""
    text = _STRINGS.sub(" ", expr)
    text = _MATCHERS.sub(" ", text)
    text = _RANGES.sub(" ", text)
    text = _GROUPINGS.sub(" ", text)
    text = _VARIABLES.sub(" ", text)
    text = _DURATIONS.sub(" ", text)
    text = _CALLS.sub(" ", text)
    return {name for name in _IDENTIFIERS.findall(text) if name.lower() not in _KEYWORDS}


# --- what the files query ----------------------------------------------------------------------------------


def _dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def _panels(panels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every panel that queries, rows' nested panels included."""
    found: list[dict[str, Any]] = []
    for panel in panels:
        if panel.get("type") == "row":
            found += _panels(panel.get("panels", []))
        else:
            found.append(panel)
    return found


def panel_exprs() -> dict[str, list[str]]:
    return {
        panel["title"]: [target["expr"] for target in panel.get("targets", []) if target.get("expr")]
        for panel in _panels(_dashboard()["panels"])
    }


def _rules() -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def rule_exprs() -> dict[str, str]:
    return {rule["alert"]: str(rule["expr"]) for rule in _rules()}


def queried_names() -> dict[str, set[str]]:
    """Where each metric name is queried from: a panel's or a rule's name for each name."""
    where: dict[str, set[str]] = {}
    for title, exprs in panel_exprs().items():
        for expr in exprs:
            for name in metric_names(expr):
                where.setdefault(name, set()).add(f"panel {title!r}")
    for alert, expr in rule_exprs().items():
        for name in metric_names(expr):
            where.setdefault(name, set()).add(f"rule {alert}")
    return where


# --- what /metrics exports ---------------------------------------------------------------------------------


def exported_names(exposition: str) -> set[str]:
    """The sample names /metrics may carry: each announced family under its own name and its suffixed forms."""
    names: set[str] = set()
    for line in exposition.splitlines():
        if line.startswith("# TYPE "):
            family = line.split()[2]
            base = family.removesuffix("_total")
            names |= {family, base, *(base + suffix for suffix in SUFFIXES)}
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{\s]", line, maxsplit=1)[0])
    return names


def _unexported(exposition: str) -> dict[str, set[str]]:
    exported = exported_names(exposition) | PROMETHEUS_OWN
    return {name: where for name, where in queried_names().items() if name not in exported}


def _compose_services() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())["services"]


# --- the PromQL reader --------------------------------------------------------------------------------------


def test_it_reads_metric_names_out_of_promql() -> None:
    expr = (
        "histogram_quantile(0.9, sum by (le, view) (rate(django_http_requests_latency_seconds_by_view_method_bucket"
        '{status=~"5..", view!="x y"}[$__rate_interval]))) > 0.5 and on (view) '
        "time() - max(health_check_dispatch_timestamp_seconds offset 5m) > 1e3 or vector(0)"
    )
    assert metric_names(expr) == {
        "django_http_requests_latency_seconds_by_view_method_bucket",
        "health_check_dispatch_timestamp_seconds",
    }


def test_it_reads_every_sample_name_a_family_announced_on_metrics_may_carry() -> None:
    exposition = "# TYPE errors_total counter\n# TYPE wait_seconds histogram\n# TYPE level gauge\nlevel 1.0\n"
    names = exported_names(exposition)
    assert {"errors_total", "errors_created", "wait_seconds_bucket", "wait_seconds_count", "level"} <= names
    assert "waits_seconds_bucket" not in names


# --- (a) the dashboard --------------------------------------------------------------------------------------


def test_it_queries_at_least_one_metric_in_every_dashboard_panel() -> None:
    exprs = panel_exprs()
    assert len(exprs) >= 11
    empty = [title for title, found in exprs.items() if not any(metric_names(e) for e in found)]
    assert empty == []


def test_it_has_a_panel_for_each_view_the_issue_asks_for() -> None:
    titles = " | ".join(panel_exprs()).lower()
    for words in (
        "breaker states", "errors by class and severity", "top services", "retries", "success rate by action",
        "fallbacks", "degradation", "health checks up/down", "healing runs by result", "approval wait",
        "open escalations by level", "time to acknowledge", "time to resolve", "intake buffer", "dead letters",
        "latency by route",
    ):  # fmt: skip
        assert words in titles, words


def test_it_points_every_dashboard_query_at_the_prometheus_datasource_variable() -> None:
    dashboard = _dashboard()
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert variables["DS_PROMETHEUS"]["query"] == "prometheus"
    assert 38 <= dashboard["schemaVersion"] <= 40
    for panel in _panels(dashboard["panels"]):
        for target in panel["targets"]:
            assert target["datasource"] == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}, panel["title"]


# --- (b) the alert rules ------------------------------------------------------------------------------------


def test_it_queries_at_least_one_metric_in_every_alert_rule() -> None:
    exprs = rule_exprs()
    assert len(exprs) >= 6
    assert [alert for alert, expr in exprs.items() if not metric_names(expr)] == []


def test_it_gives_every_alert_rule_a_one_line_runbook_and_a_summary() -> None:
    for rule in _rules():
        annotations = rule["annotations"]
        assert annotations["runbook"].strip() and "\n" not in annotations["runbook"].strip(), rule["alert"]
        assert annotations["summary"].strip(), rule["alert"]
        assert rule["labels"]["severity"] in ("info", "warning", "critical"), rule["alert"]


def test_it_has_an_alert_for_each_health_signal_the_issue_asks_for() -> None:
    names = queried_names()
    alerted = {name for name, where in names.items() if any(w.startswith("rule ") for w in where)}
    assert {
        "intake_buffer_entries",  # intake buffer growing
        "intake_dead_letters_total",  # dead letters appearing
        "health_check_dispatch_timestamp_seconds",  # workers or beat silent
        "breaker_store_errors_total",  # Redis unreachable: fail-open/closed in force
        "notifications_total",  # escalation notifications failing
        "healing_approval_wait_seconds_bucket",  # approval waits too long
    } <= alerted


# --- (c) against /metrics -----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_it_queries_only_metrics_this_process_exports_on_metrics(client: Client) -> None:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert _unexported(response.content.decode()) == {}


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.django_db
def test_it_queries_only_metrics_a_running_gunicorn_exports_on_metrics(tmp_path: Path) -> None:
    # Production mode without PROMETHEUS_MULTIPROC_DIR: every registered family is announced, sampled or not
    # (the multiprocess collector only lists families some process has written a sample of).
    port = free_port()
    env = process_env(tmp_path, GUNICORN_BIND=f"127.0.0.1:{port}", GUNICORN_WORKERS="1", GUNICORN_THREADS="2")
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    web = start(
        [PYTHON, "-m", "gunicorn", "-c", "config/gunicorn.conf.py", "config.wsgi"], env, tmp_path / "web.log"
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz")
        response = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
    finally:
        stop(web)
    assert response.status_code == 200
    assert _unexported(response.text) == {}


# --- the signals added for the alerts -----------------------------------------------------------------------


@pytest.mark.django_db
def test_it_stamps_the_beat_and_worker_heartbeat_when_the_dispatch_runs() -> None:
    check_metrics.health_check_dispatch_timestamp_seconds.set(0)
    before = time.time()
    check_tasks.dispatch_due_checks()
    assert REGISTRY.get_sample_value("health_check_dispatch_timestamp_seconds") >= before


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
@override_settings(REBOUND=rebound_settings(INTAKE_MODE="buffered"))
def test_it_sets_the_intake_buffer_depth_as_each_drain_ends() -> None:
    error_services.record_errors([ErrorReport(service="svc", message="a")], agent=None)
    error_services.record_errors([ErrorReport(service="svc", message="b")], agent=None)
    assert intake.observe_buffer(redis.Redis.from_url(settings.TEST_REDIS_URL)) == 2
    assert REGISTRY.get_sample_value("intake_buffer_entries") == 2
    intake.drain()
    assert REGISTRY.get_sample_value("intake_buffer_entries") == 0


# --- cardinality ----------------------------------------------------------------------------------------------


def _series(exposition: str) -> Counter[str]:
    return Counter(
        re.split(r"[{\s]", line, maxsplit=1)[0]
        for line in exposition.splitlines()
        if line and not line.startswith("#")
    )


def _samples(exposition: str, name: str) -> dict[str, float]:
    return {
        labels: float(value)
        for labels, value in re.findall(rf"^{name}(\{{[^}}]*\}}) (\S+)$", exposition, re.M)
    }


@pytest.mark.django_db
def test_it_keeps_free_text_out_of_metric_labels_under_many_distinct_errors(
    client: Client, capsys: pytest.CaptureFixture[str], django_capture_on_commit_callbacks: Any
) -> None:
    first = client.get("/metrics").content.decode()
    before = _series(first)
    _samples_before = _samples(first, "errors_total")
    reports = [
        ErrorReport(
            service=f"unregistered-{n}", type_name=f"Error{n}", message=f"distinct failure {n} id=u{n}x"
        )
        for n in range(300)
    ]
    with django_capture_on_commit_callbacks(execute=True):  # errors_total counts on commit
        error_services.record_errors(reports, agent=None)
    text = client.get("/metrics").content.decode()
    after = _series(text)
    grown = {name: after[name] - before.get(name, 0) for name in after if after[name] > before.get(name, 0)}
    with capsys.disabled():
        own = {
            name: n
            for name, n in sorted(after.items())
            if not name.startswith(("django_", "python_", "process_"))
        }
        print("\nRebound's series per metric after 300 distinct errors:", own)
    assert sum(_samples(text, "errors_total").values()) - sum(_samples_before.values()) == 300
    assert max(grown.values(), default=0) <= 20, grown
    labels = set(re.findall(r'="([^"]*)"', text))
    assert not {
        value for value in labels if value.startswith(("unregistered-", "distinct failure", "Error1"))
    }


# --- provisioning ---------------------------------------------------------------------------------------------


def test_it_puts_only_prometheus_and_grafana_in_the_monitoring_profile() -> None:
    services = _compose_services()
    profiled = {name for name, service in services.items() if "profiles" in service}
    assert profiled == {"prometheus", "grafana"}
    assert all(services[name]["profiles"] == ["monitoring"] for name in profiled)
    assert services["prometheus"]["image"].startswith("prom/prometheus:")
    assert services["grafana"]["image"].startswith("grafana/grafana:")


def test_it_mounts_monitoring_files_that_exist() -> None:
    services = _compose_services()
    mounted: dict[str, str] = {}
    for name in ("prometheus", "grafana"):
        for volume in services[name]["volumes"]:
            source, target = volume.split(":")[:2]
            if source.startswith("./"):
                assert (ROOT / source).exists(), volume
                mounted[target] = source
    assert mounted["/etc/prometheus/prometheus.yml"] == "./deploy/prometheus/prometheus.yml"
    assert mounted["/etc/prometheus/rebound-rules.yml"] == "./deploy/prometheus/rebound-rules.yml"
    dashboards = yaml.safe_load(DASHBOARD_PROVIDERS.read_text())["providers"][0]["options"]["path"]
    assert (ROOT / mounted[dashboards] / DASHBOARD.name).exists()
    assert (ROOT / mounted["/etc/grafana/provisioning/datasources"] / DATASOURCES.name).exists()
    assert (ROOT / mounted["/etc/grafana/provisioning/dashboards"] / DASHBOARD_PROVIDERS.name).exists()


def test_it_scrapes_webs_metrics_route_and_loads_the_rules_where_compose_mounts_them() -> None:
    config = yaml.safe_load(PROMETHEUS.read_text())
    assert config["rule_files"] == ["/etc/prometheus/rebound-rules.yml"]
    (job,) = config["scrape_configs"]
    assert job["job_name"] == "rebound"  # the rules' up{job="rebound"}
    assert job["metrics_path"] == "/metrics"
    assert job["static_configs"][0]["targets"] == ["web:8000"]
    assert "8000" in str(_compose_services()["web"]["ports"])


def test_it_provisions_the_datasource_the_dashboard_defaults_to() -> None:
    (source,) = yaml.safe_load(DATASOURCES.read_text())["datasources"]
    assert source["type"] == "prometheus"
    assert source["url"] == "http://prometheus:9090"
    variable = next(v for v in _dashboard()["templating"]["list"] if v["name"] == "DS_PROMETHEUS")
    assert variable["current"]["value"] == source["uid"]


# --- Prometheus's own check ----------------------------------------------------------------------------------


def test_it_passes_promtools_check_of_the_rules() -> None:
    # PromQL that parses, durations and label templates Prometheus accepts (promtool: the prometheus package).
    checked = subprocess.run(["promtool", "check", "rules", str(RULES)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_it_passes_promtools_check_of_the_scrape_configuration(tmp_path: Path) -> None:
    # The rules' path as the container mounts it, made this checkout's so that promtool can follow it.
    config = PROMETHEUS.read_text().replace("/etc/prometheus/rebound-rules.yml", str(RULES))
    (tmp_path / "prometheus.yml").write_text(config)
    checked = subprocess.run(
        ["promtool", "check", "config", str(tmp_path / "prometheus.yml")], capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "1 rule files found" in checked.stdout
