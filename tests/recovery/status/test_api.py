"""GET /api/v1/status: the parts that later issues' escalation queue will pick up."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.utils import timezone

from tests.support import factories


def test_it_lists_stale_tasks_longest_quiet_first(agent_client: Any) -> None:
    now = timezone.now()
    agent = factories.AgentFactory(name="digest-agent")
    factories.task(agent, "fresh")
    factories.task(agent, "quiet", stale_at=now - timedelta(minutes=5), last_seq=7)
    factories.task(agent, "quieter", stale_at=now - timedelta(minutes=30), last_seq=2)
    factories.task(agent, "done", stale_at=now - timedelta(hours=1), status="succeeded")

    stale = agent_client.get("/api/v1/status").json()["stale_tasks"]

    assert stale["count"] == 2
    assert [(t["agent"], t["task_id"], t["last_seq"]) for t in stale["oldest"]] == [
        ("digest-agent", "quieter", 2),
        ("digest-agent", "quiet", 7),
    ]


def test_it_reports_nothing_waiting_on_a_quiet_fleet(agent_client: Any) -> None:
    status = agent_client.get("/api/v1/status").json()

    assert status["stale_tasks"] == {"count": 0, "oldest": []}
    assert status["retries_needing_human"] == {"count": 0, "newest": []}
    assert status["rollbacks_needing_human"] == {"count": 0, "newest": []}
    assert status["degradation"]["level"] == "normal"
