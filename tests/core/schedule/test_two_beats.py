"""Two real beat processes at once (core/schedule/beat.py): each periodic entry is sent once per tick, not twice.

Both beats send to the test run's Redis db, and no worker consumes: the messages queued are what they sent."""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import pytest
import redis
from django.conf import settings

from core.schedule.models import PeriodicClaim
from tests.support.processes import PYTHON, process_env, start, stop, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

DISPATCH = "dispatch-health-checks"  # every second
DISPATCH_TASK = "healing.checks.tasks.dispatch_due_checks"
RUN_S = 8.0


def _sent(client: redis.Redis) -> Counter[str]:
    """The tasks queued on the default queue, by name."""
    raw: list[bytes] = client.lrange("celery", 0, -1)  # type: ignore[assignment]
    return Counter(json.loads(message)["headers"]["task"] for message in raw)


def test_it_sends_each_tick_once_with_two_beats_running(tmp_path: Path) -> None:
    env = process_env(tmp_path, CELERY_BROKER_URL=settings.TEST_REDIS_URL)
    client = redis.Redis.from_url(settings.TEST_REDIS_URL)
    args = [PYTHON, "-m", "celery", "-A", "config", "beat", "-l", "INFO", "--pidfile="]
    beats = [start([*args, "-s", str(tmp_path / f"beat{i}")], env, tmp_path / f"beat{i}.log") for i in (1, 2)]
    try:
        assert wait_for(lambda: _sent(client)[DISPATCH_TASK] > 0, timeout=60), (
            tmp_path / "beat1.log"
        ).read_text()
        first = time.monotonic()
        time.sleep(RUN_S)
        sent = _sent(client)[DISPATCH_TASK]
        elapsed = time.monotonic() - first
        assert all(beat.poll() is None for beat in beats), [
            (tmp_path / f"beat{i}.log").read_text() for i in (1, 2)
        ]
    finally:
        for beat in beats:
            stop(beat)
    claim = PeriodicClaim.objects.get(name=DISPATCH)
    # One a second from whichever beat holds the entry (two beats without claims: about twice as many).
    assert sent <= elapsed + 2
    assert claim.skips > 0  # the other beat was due too, and left its ticks
    assert claim.sends >= _sent(client)[DISPATCH_TASK] >= sent
