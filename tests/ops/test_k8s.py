"""The Kubernetes manifests under deploy/k8s/: a kustomize base and a production overlay (docs/deploy.md).

No cluster needed: the manifests are read as YAML and held to docker-compose.yml, config/env.py and the
entrypoint; `kubectl kustomize` (on the PATH here) builds the overlay offline.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from config.env import Env

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
BASE = K8S / "base"
PRODUCTION = K8S / "overlays" / "production"
SECRET_EXAMPLE = K8S / "secret.example.yaml"
COMPOSE = ROOT / "docker-compose.yml"

# Deployment name -> docker-compose service (and the name of the Deployment's main container).
PROCESSES = {"rebound-web": "web", "rebound-worker": "worker", "rebound-beat": "beat", "rebound-mcp": "mcp"}
METRICS_DIR = "/var/run/rebound/metrics"

# Settings the ConfigMap or Secret carries that are not fields of config.env.Env, with the file that reads each.
READ_ELSEWHERE = {
    "CELERY_CONCURRENCY": ROOT / "scripts" / "docker-entrypoint.sh",
    "GUNICORN_WORKERS": ROOT / "config" / "gunicorn.conf.py",
    "GUNICORN_THREADS": ROOT / "config" / "gunicorn.conf.py",
}


def _documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _base() -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    return [doc for name in kustomization["resources"] for doc in _documents(BASE / name)]


def _kind(kind: str, documents: list[dict[str, Any]] | None = None) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for doc in (documents or _base()) if doc["kind"] == kind}


def _deployments() -> dict[str, dict[str, Any]]:
    return _kind("Deployment")


def _main_container(deployment: dict[str, Any]) -> dict[str, Any]:
    name = PROCESSES[deployment["metadata"]["name"]]
    (container,) = [c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == name]
    return container


def _pod_specs() -> Iterator[tuple[str, dict[str, Any]]]:
    for name, deployment in _deployments().items():
        yield name, deployment["spec"]["template"]["spec"]
    for name, job in _kind("Job").items():
        yield name, job["spec"]["template"]["spec"]


def _compose_services() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())["services"]


def _kustomizations() -> list[Path]:
    return sorted(K8S.rglob("kustomization.yaml"))


# --- kustomize --------------------------------------------------------------------------------------------


def test_it_lists_only_files_that_exist_and_parse() -> None:
    assert {path.parent for path in _kustomizations()} == {BASE, PRODUCTION}
    for kustomization_path in _kustomizations():
        kustomization = yaml.safe_load(kustomization_path.read_text())
        listed = kustomization.get("resources", []) + [p["path"] for p in kustomization.get("patches", [])]
        assert listed, kustomization_path
        for name in listed:
            target = (kustomization_path.parent / name).resolve()
            assert target.exists(), f"{kustomization_path}: {name}"
            if target.is_file():
                assert _documents(target), f"{kustomization_path}: {name} is empty"
            else:
                assert (target / "kustomization.yaml").is_file(), f"{kustomization_path}: {name}"


def test_it_keeps_the_example_secret_out_of_every_kustomization() -> None:
    for kustomization_path in _kustomizations():
        kustomization = yaml.safe_load(kustomization_path.read_text())
        assert "secretGenerator" not in kustomization, kustomization_path
        assert not any("secret" in name for name in kustomization.get("resources", [])), kustomization_path
    assert "Secret" not in {doc["kind"] for doc in _base()}
    (secret,) = _documents(SECRET_EXAMPLE)
    assert secret["kind"] == "Secret"
    assert "REPLACE" in SECRET_EXAMPLE.read_text()


def test_it_patches_only_resources_the_base_defines() -> None:
    base = {(doc["kind"], doc["metadata"]["name"]) for doc in _base()}
    overlay = yaml.safe_load((PRODUCTION / "kustomization.yaml").read_text())
    for patch in overlay["patches"]:
        for doc in _documents(PRODUCTION / patch["path"]):
            assert (doc["kind"], doc["metadata"]["name"]) in base, patch["path"]
            for container in doc.get("spec", {}).get("template", {}).get("spec", {}).get("containers", []):
                names = [
                    c["name"]
                    for c in _deployments()[doc["metadata"]["name"]]["spec"]["template"]["spec"]["containers"]
                ]
                assert container["name"] in names, patch["path"]
    for replica in overlay["replicas"]:
        assert ("Deployment", replica["name"]) in base
    assert {image["name"] for image in overlay["images"]} == {"rebound"}


def test_it_builds_the_production_overlay() -> None:
    built = subprocess.run(
        ["kubectl", "kustomize", str(PRODUCTION)], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    documents = [doc for doc in yaml.safe_load_all(built) if doc]
    deployments = _kind("Deployment", documents)
    replicas = {name: deployment["spec"]["replicas"] for name, deployment in deployments.items()}
    assert replicas == {"rebound-web": 3, "rebound-worker": 2, "rebound-beat": 2, "rebound-mcp": 2}
    images = {
        container["image"]
        for doc in [*deployments.values(), *_kind("Job", documents).values()]
        for key in ("containers", "initContainers")
        for container in doc["spec"]["template"]["spec"].get(key, [])
    }
    assert len(images) == 1
    (image,) = images
    assert re.fullmatch(r"[^:]+/rebound:[\w.-]+", image) and not image.endswith(":latest")
    assert {doc["metadata"].get("namespace") for doc in documents} == {"rebound"}
    assert "rebound.example.com" in _kind("ConfigMap", documents)["rebound-config"]["data"]["ALLOWED_HOSTS"]


# --- processes ----------------------------------------------------------------------------------------------


def test_it_runs_each_process_with_the_compose_command() -> None:
    # compose's `command` replaces the image's CMD and keeps its ENTRYPOINT: in Kubernetes that is `args`.
    services = _compose_services()
    deployments = _deployments()
    assert set(deployments) == set(PROCESSES)
    for name, deployment in deployments.items():
        container = _main_container(deployment)
        assert "command" not in container, name
        assert container["args"] == services[PROCESSES[name]]["command"], name


def test_it_runs_every_container_on_the_one_image() -> None:
    images = {
        container["image"]
        for _, spec in _pod_specs()
        for key in ("containers", "initContainers")
        for container in spec.get(key, [])
    }
    assert images == {"rebound:latest"}  # compose's default REBOUND_IMAGE; the overlay pins a tag


def test_it_runs_migrate_in_the_job() -> None:
    (job,) = _kind("Job").values()
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["args"] == _compose_services()["migrate"]["command"] == ["migrate"]
    assert job["spec"]["template"]["spec"]["restartPolicy"] in ("OnFailure", "Never")


def test_it_starts_no_process_before_the_migrations_are_applied() -> None:
    for name, deployment in _deployments().items():
        (init,) = deployment["spec"]["template"]["spec"]["initContainers"]
        assert "manage.py migrate --check" in " ".join(init["args"]), name


def test_it_never_migrates_from_web() -> None:
    env = {item["name"]: item["value"] for item in _main_container(_deployments()["rebound-web"])["env"]}
    assert env["MIGRATE_ON_START"] == "0"
    assert "MIGRATE_ON_START" in (ROOT / "scripts" / "docker-entrypoint.sh").read_text()


def test_it_runs_a_standby_beat_in_production() -> None:
    # Two beats at once are harmless: each tick is claimed by one (core/schedule/, tests/core/schedule/).
    assert _deployments()["rebound-beat"]["spec"]["replicas"] == 1
    production = yaml.safe_load((PRODUCTION / "kustomization.yaml").read_text())
    assert {r["name"]: r["count"] for r in production["replicas"]}["rebound-beat"] == 2


# --- probes -----------------------------------------------------------------------------------------------


def test_it_probes_web_liveness_on_healthz_and_readiness_on_readyz() -> None:
    web = _main_container(_deployments()["rebound-web"])
    ports = {port["name"]: port["containerPort"] for port in web["ports"]}
    assert ports == {"http": 8000}
    assert (web["livenessProbe"]["httpGet"]["path"], web["livenessProbe"]["httpGet"]["port"]) == (
        "/healthz",
        "http",
    )
    assert (web["readinessProbe"]["httpGet"]["path"], web["readinessProbe"]["httpGet"]["port"]) == (
        "/readyz",
        "http",
    )


def test_it_probes_mcp_where_compose_checks_it() -> None:
    mcp = _main_container(_deployments()["rebound-mcp"])
    compose_check = " ".join(_compose_services()["mcp"]["healthcheck"]["test"])
    assert "127.0.0.1:8001/healthz" in compose_check
    assert {port["name"]: port["containerPort"] for port in mcp["ports"]} == {"mcp": 8001}
    for probe in ("livenessProbe", "readinessProbe"):
        assert (mcp[probe]["httpGet"]["path"], mcp[probe]["httpGet"]["port"]) == ("/healthz", "mcp")


def test_it_sends_a_host_that_allowed_hosts_lists_on_every_http_probe() -> None:
    allowed = _kind("ConfigMap")["rebound-config"]["data"]["ALLOWED_HOSTS"].split(",")
    probes = [
        container[probe]["httpGet"]
        for name in ("rebound-web", "rebound-mcp")
        for container in [_main_container(_deployments()[name])]
        for probe in ("livenessProbe", "readinessProbe", "startupProbe")
        if probe in container
    ]
    assert len(probes) == 5
    for probe in probes:
        (header,) = probe["httpHeaders"]
        assert header["name"] == "Host" and header["value"] in allowed


def test_it_probes_the_worker_with_composes_ping_for_readiness_only() -> None:
    worker = _main_container(_deployments()["rebound-worker"])
    compose_check = _compose_services()["worker"]["healthcheck"]["test"][1].replace("$$", "$")
    assert worker["readinessProbe"]["exec"]["command"] == ["sh", "-c", compose_check]
    assert "livenessProbe" not in worker


# --- resources, disruption, services ----------------------------------------------------------------------


def test_it_gives_every_container_resource_requests_and_limits() -> None:
    for name, spec in _pod_specs():
        for container in spec["containers"] + spec.get("initContainers", []):
            resources = container["resources"]
            assert {"cpu", "memory"} <= set(resources["requests"]), (name, container["name"])
            assert {"cpu", "memory"} <= set(resources["limits"]), (name, container["name"])


def test_it_selects_web_pods_with_the_pdb() -> None:
    (pdb,) = _kind("PodDisruptionBudget").values()
    web_labels = _deployments()["rebound-web"]["spec"]["template"]["metadata"]["labels"]
    selector = pdb["spec"]["selector"]["matchLabels"]
    assert selector.items() <= web_labels.items()
    others = [d for n, d in _deployments().items() if n != "rebound-web"]
    assert not any(selector.items() <= d["spec"]["template"]["metadata"]["labels"].items() for d in others)


def test_it_serves_web_and_mcp_through_services_on_their_named_ports() -> None:
    services = _kind("Service")
    assert set(services) == {"rebound-web", "rebound-mcp"}
    for name, service in services.items():
        deployment = _deployments()[name]
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert service["spec"]["selector"].items() <= labels.items()
        container_ports = {port["name"] for port in _main_container(deployment)["ports"]}
        assert {port["targetPort"] for port in service["spec"]["ports"]} <= container_ports
    assert services["rebound-mcp"]["spec"]["sessionAffinity"] == "ClientIP"


# --- settings ---------------------------------------------------------------------------------------------


def test_it_names_only_settings_the_code_reads() -> None:
    (secret,) = _documents(SECRET_EXAMPLE)
    names = set(_kind("ConfigMap")["rebound-config"]["data"]) | set(secret["stringData"])
    overlay_config = _documents(PRODUCTION / "configmap.yaml")[0]["data"]
    assert set(overlay_config) <= names
    for name in sorted(names - set(Env.model_fields)):
        assert name in READ_ELSEWHERE, name
        assert re.search(rf"\b{name}\b", READ_ELSEWHERE[name].read_text()), name


def test_it_keeps_the_secrets_in_the_secret_and_composes_settings_in_the_configmap() -> None:
    (secret,) = _documents(SECRET_EXAMPLE)
    assert set(secret["stringData"]) == {"SECRET_KEY", "DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL"}
    config = _kind("ConfigMap")["rebound-config"]["data"]
    compose_env = set(yaml.safe_load(COMPOSE.read_text())["x-app-env"]) | {"MCP_PUBLIC_URL"}
    assert compose_env - set(config) == {"SECRET_KEY", "DATABASE_URL", "REDIS_URL"}
    for name, spec in _pod_specs():
        for container in [c for c in spec["containers"] + spec.get("initContainers", []) if "envFrom" in c]:
            refs = [ref.get("configMapRef", ref.get("secretRef"))["name"] for ref in container["envFrom"]]
            assert refs == ["rebound-config", "rebound-secrets"], (name, container["name"])


# --- metrics ----------------------------------------------------------------------------------------------


def test_it_gives_every_pod_its_own_metrics_folder() -> None:
    assert _kind("ConfigMap")["rebound-config"]["data"]["PROMETHEUS_MULTIPROC_DIR"] == METRICS_DIR
    for name, spec in _pod_specs():
        assert {"name": "metrics", "emptyDir": {}} in spec["volumes"], name
        for container in spec["containers"] + spec.get("initContainers", []):
            assert {"name": "metrics", "mountPath": METRICS_DIR} in container["volumeMounts"], (
                name,
                container,
            )


def test_it_marks_every_pod_that_serves_metrics_for_scraping() -> None:
    for name, deployment in _deployments().items():
        template = deployment["spec"]["template"]
        annotations = template["metadata"].get("annotations", {})
        if name == "rebound-beat":
            assert "prometheus.io/scrape" not in annotations
            continue
        assert annotations["prometheus.io/scrape"] == "true", name
        assert annotations["prometheus.io/path"] == "/metrics", name
        ports = {p["containerPort"] for c in template["spec"]["containers"] for p in c.get("ports", [])}
        assert int(annotations["prometheus.io/port"]) in ports, name
