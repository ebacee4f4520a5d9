"""The escalation queue's Prometheus metrics (named like recovery/metrics.py, without a prefix).

escalations_open{level} is not a gauge any process sets: it is read from the database when /metrics is scraped
(OpenEscalations), so it is right whichever process serves the scrape and however many processes changed the
queue. The counters and histograms are ordinary multiprocess-safe metrics, changed on commit."""

from __future__ import annotations

import logging
from collections.abc import Iterator

from django.db import Error as DatabaseFailure
from prometheus_client import Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from core.infra import scrape
from healing.escalations import selectors

log = logging.getLogger(__name__)

# From a minute to three days: a queue is worked in minutes, and forgotten in days.
WAIT_BUCKETS = (60, 120, 300, 600, 900, 1800, 3600, 7200, 14400, 28800, 86400, 259200)

escalations_raised_total = Counter(
    "escalations_raised_total",
    "Escalations opened, by trigger and level: new ones, and resolved ones reopened by a repeat (repeats "
    "counted into an open one are not counted here).",
    ["trigger", "level"],
)
escalation_time_to_acknowledge_seconds = Histogram(
    "escalation_time_to_acknowledge_seconds",
    "From an escalation's opening (raised or reopened) to its acknowledgement, by its level then.",
    ["level"],
    buckets=WAIT_BUCKETS,
)
escalation_time_to_resolve_seconds = Histogram(
    "escalation_time_to_resolve_seconds",
    "From an escalation's opening (raised or reopened) to its resolution, by a human or automatic, by its level "
    "then.",
    ["level"],
    buckets=WAIT_BUCKETS,
)


class OpenEscalations(Collector):
    """escalations_open{level}: the escalations not resolved (open, acknowledged or snoozed), counted in the
    database at scrape time. A scrape while the database cannot answer leaves the metric out (no stale or zero
    value that would read as an empty queue)."""

    NAME = "escalations_open"
    HELP = "Escalations not resolved (open, acknowledged or snoozed), by level, counted when scraped."
    # Read by the /metrics view in multiprocess mode, which builds a registry of its own (see README, Metrics).
    read_at_scrape = True

    def _family(self) -> GaugeMetricFamily:
        return GaugeMetricFamily(self.NAME, self.HELP, labels=["level"])

    def describe(self) -> list[Metric]:
        # Without describe(), registering would call collect(), and so query the database, at import.
        return [self._family()]

    def collect(self) -> Iterator[Metric]:
        try:
            counts = selectors.open_counts()
        except DatabaseFailure as error:
            log.warning("escalations_open left out of this scrape: the database did not answer (%s)", error)
            return
        family = self._family()
        for level, count in counts.items():
            family.add_metric([level], count)
        yield family


open_escalations = OpenEscalations()
scrape.read_at_scrape(open_escalations)
