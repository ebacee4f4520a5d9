"""The queue's metrics through GET /metrics: escalations_open{level} counted in the database when scraped (so
right whichever process answers, in multiprocess mode too), and the time to acknowledge and to resolve."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from healing.escalations import services
from tests.support.escalations import raise_one, reviewer_actor

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]


def sample(text: str, name: str, labels: str) -> float | None:
    match = re.search(rf"^{re.escape(name)}{{{re.escape(labels)}}} (\S+)$", text, re.M)
    return float(match.group(1)) if match else None


def test_it_serves_the_open_escalations_by_level_as_counted_when_scraped(agent_client: Any) -> None:
    raise_one("a", "warning")
    raise_one("b", "warning")
    critical = raise_one("c", "critical")
    services.acknowledge(escalation_id=critical.pk, actor=reviewer_actor())  # acknowledged is still open
    raise_one("d", "info")
    services.auto_resolve(["d"], reason="gone")
    text = agent_client.get("/metrics").content.decode()
    assert "# TYPE escalations_open gauge" in text
    counts = {
        level: sample(text, "escalations_open", f'level="{level}"')
        for level in ("info", "warning", "critical", "emergency")
    }
    assert counts == {"info": 0.0, "warning": 2.0, "critical": 1.0, "emergency": 0.0}
    services.resolve(escalation_id=critical.pk, resolution="fixed", actor=reviewer_actor())
    text = agent_client.get("/metrics").content.decode()
    assert sample(text, "escalations_open", 'level="critical"') == 0.0


def test_it_serves_the_times_to_acknowledge_and_to_resolve(
    agent_client: Any, django_capture_on_commit_callbacks: Any
) -> None:
    row = raise_one("k", "emergency")
    actor = reviewer_actor()
    before = agent_client.get("/metrics").content.decode()
    with django_capture_on_commit_callbacks(execute=True):
        services.acknowledge(escalation_id=row.pk, actor=actor)
        services.resolve(escalation_id=row.pk, resolution="done", actor=actor)
    text = agent_client.get("/metrics").content.decode()
    for name in ("escalation_time_to_acknowledge_seconds_count", "escalation_time_to_resolve_seconds_count"):
        assert (sample(text, name, 'level="emergency"') or 0) == (
            sample(before, name, 'level="emergency"') or 0
        ) + 1
    assert (
        sample(text, "escalation_time_to_acknowledge_seconds_bucket", 'le="60.0",level="emergency"')
        is not None
    )


def test_it_serves_the_open_escalations_in_multiprocess_mode(
    agent_client: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # With PROMETHEUS_MULTIPROC_DIR the page is built from the shared folder in a registry of its own, per
    # scrape: the count read from the database must be in it too.
    raise_one("a", "emergency")
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    text = agent_client.get("/metrics").content.decode()
    assert sample(text, "escalations_open", 'level="emergency"') == 1.0
