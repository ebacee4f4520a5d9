#!/usr/bin/env bash
# Entrypoint of the Rebound image. The first argument is the role:
#
#   web          migrations (unless MIGRATE_ON_START=0), then gunicorn on config/gunicorn.conf.py
#   worker       the Celery worker (CELERY_CONCURRENCY processes, default 2)
#   beat         the Celery beat scheduler (django_celery_beat's DatabaseScheduler claiming each tick: core/schedule)
#   migrate      apply the migrations and exit (extra arguments go to `manage.py migrate`)
#   healthcheck  [PATH]: exit 0 when the web role answers 200 on PATH (default /healthz)
#   anything else is exec'd as is, e.g. `python manage.py createsuperuser`.
#
# Paths are relative to the image's WORKDIR (/app).
set -euo pipefail

# Prometheus multiprocess mode: every process writes its samples into this folder and /metrics (served by the
# web role) aggregates them, so it must exist before any Python process starts.
prepare_metrics_dir() {
    if [[ -n "${PROMETHEUS_MULTIPROC_DIR:-}" ]]; then
        mkdir -p "$PROMETHEUS_MULTIPROC_DIR"
    fi
}

# Files left by processes of a previous run (same pids, dead gauges) would be aggregated forever: the web
# role, which serves /metrics, starts from an empty folder.
clear_stale_metrics() {
    if [[ -n "${PROMETHEUS_MULTIPROC_DIR:-}" ]]; then
        find "$PROMETHEUS_MULTIPROC_DIR" -mindepth 1 -maxdepth 1 -type f -name '*.db' -delete
    fi
}

migrate() {
    python manage.py migrate --noinput "$@"
}

# Used by the image's HEALTHCHECK and docker-compose.yml. It sends a Host header taken from ALLOWED_HOSTS, so
# that the check still passes when ALLOWED_HOSTS does not list localhost.
healthcheck() {
    exec python - "${1:-/healthz}" <<'PY'
import os
import sys
import urllib.request

hosts = [h.strip() for h in os.environ.get("ALLOWED_HOSTS", "").split(",") if h.strip()]
host = next((h.lstrip(".") for h in hosts if h != "*"), "localhost")
port = os.environ.get("GUNICORN_BIND", "0.0.0.0:8000").rpartition(":")[2]
port = port if port.isdigit() else "8000"
request = urllib.request.Request(f"http://127.0.0.1:{port}{sys.argv[1]}", headers={"Host": host})
try:
    with urllib.request.urlopen(request, timeout=4) as response:
        sys.exit(0 if response.status == 200 else 1)
except Exception as error:
    print(f"healthcheck {sys.argv[1]}: {error}", file=sys.stderr)
    sys.exit(1)
PY
}

role="${1:-web}"
if [[ $# -gt 0 ]]; then
    shift
fi

case "$role" in
    web)
        prepare_metrics_dir
        clear_stale_metrics
        if [[ "${MIGRATE_ON_START:-1}" != "0" ]]; then
            migrate
        fi
        exec gunicorn -c config/gunicorn.conf.py config.wsgi "$@"
        ;;
    worker)
        prepare_metrics_dir
        exec celery -A config worker -l INFO --concurrency "${CELERY_CONCURRENCY:-2}" "$@"
        ;;
    beat)
        prepare_metrics_dir
        exec celery -A config beat -l INFO "$@"
        ;;
    migrate)
        prepare_metrics_dir
        migrate "$@"
        ;;
    healthcheck)
        healthcheck "$@"
        ;;
    *)
        prepare_metrics_dir
        exec "$role" "$@"
        ;;
esac
