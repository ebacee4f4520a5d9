# Rebound production image: one image for every role (web, worker, beat, migrate).
#
#   docker build -t rebound .
#   docker run --rm rebound migrate      # or: web | worker | beat | <any command>
#
# The role is the first argument, dispatched by scripts/docker-entrypoint.sh. The image defaults to
# REBOUND_MODE=production, so it refuses to start without SECRET_KEY, DATABASE_URL, REDIS_URL and
# ALLOWED_HOSTS (see config/env.py) rather than silently running on embedded defaults.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONPATH=/app \
    DJANGO_SETTINGS_MODULE=config.settings \
    REBOUND_MODE=production
# PYTHONPATH: the code in /app comes before the installed copy in site-packages, so BASE_DIR (and with it
# templates/ and var/) is /app for python, gunicorn and celery alike.

RUN groupadd --system --gid 10001 rebound \
    && useradd --system --uid 10001 --gid rebound --home-dir /app --no-create-home --shell /usr/sbin/nologin rebound

WORKDIR /app

# Dependencies first, from pyproject.toml alone, so that a code change does not reinstall them.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

# Then the project itself (no dev extra). Its dependencies are already there, hence --no-deps.
COPY . .
RUN pip install --no-deps . \
    && rm -rf build ./*.egg-info \
    && install -m 0755 scripts/docker-entrypoint.sh /usr/local/bin/docker-entrypoint.sh

# Static files at build time: the embedded mode needs no database, broker or real secret.
# var/ (DATA_DIR) and the Prometheus multiprocess folder belong to the runtime user; a named volume mounted
# on the latter starts with this ownership. The code stays root-owned, read-only for the runtime user.
RUN REBOUND_MODE=embedded SECRET_KEY=build-time-only-collectstatic-key-not-a-secret \
        python manage.py collectstatic --noinput \
    && rm -rf var/broker var/*.sqlite3* \
    && mkdir -p /var/run/rebound/metrics \
    && chown -R rebound:rebound var /var/run/rebound

USER rebound

EXPOSE 8000

# Liveness of the web role (no database). worker and beat have no HTTP server: docker-compose.yml gives
# them their own healthcheck or disables this one.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["docker-entrypoint.sh", "healthcheck", "/healthz"]

ENTRYPOINT ["docker-entrypoint.sh"]
CMD ["web"]
