"""GET /metrics: django-prometheus's metrics and Rebound's, added up across processes when
PROMETHEUS_MULTIPROC_DIR is set, with the collectors that read their values when scraped. A count kept in the
database (open escalations by level) is no process's samples, so in multiprocess mode it must join the registry
built for each scrape too; such collectors register with read_at_scrape()."""

from __future__ import annotations

import os

from django.http import HttpRequest, HttpResponse
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest, multiprocess
from prometheus_client.registry import Collector

_at_scrape: list[Collector] = []


def read_at_scrape(collector: Collector) -> Collector:
    """Register a collector whose values are read when /metrics is scraped (once, at import)."""
    REGISTRY.register(collector)
    _at_scrape.append(collector)
    return collector


def _registry() -> CollectorRegistry:
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return REGISTRY
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    for collector in _at_scrape:
        registry.register(collector)
    return registry


def export(request: HttpRequest) -> HttpResponse:
    """GET /metrics: what django-prometheus's view answers, and the collectors read at scrape time."""
    return HttpResponse(generate_latest(_registry()), content_type=CONTENT_TYPE_LATEST)
