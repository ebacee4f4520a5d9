"""The demo tasks' state is shared by every process, in both modes: `flaky` counts its calls in Redis, or in a
file under DATA_DIR without Redis (the embedded mode), never in a per-process cache (docs/retries.md)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.core.cache import cache
from django.test import override_settings

from recovery.calls import task_registry
from recovery.calls import tasks as demo_tasks
from tests.support.processes import PYTHON, ROOT


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[Path]:
    """The embedded mode's setting: no Redis, a DATA_DIR of its own."""
    with override_settings(REDIS_URL=None, DATA_DIR=tmp_path):
        yield tmp_path


def flaky(key: str, failures: int = 2) -> task_registry.TaskRunResult:
    return task_registry.run("recovery.demo_tasks.flaky", [], {"key": key, "failures": failures})


def test_it_keeps_the_count_without_redis_when_this_process_forgets_its_cache(embedded: Path) -> None:
    assert flaky("shared").ok is False
    cache.clear()  # what another process sees: nothing of this one's cache

    assert flaky("shared").ok is False
    third = flaky("shared")

    assert third.ok is True
    assert third.value == {"call": 3, "value": None}
    assert demo_tasks.flaky_calls("shared") == 3
    assert list((embedded / "demo").iterdir())  # the count is a file under DATA_DIR


def test_it_counts_each_key_apart(embedded: Path) -> None:
    flaky("a")
    flaky("a")
    flaky("b")

    assert (demo_tasks.flaky_calls("a"), demo_tasks.flaky_calls("b"), demo_tasks.flaky_calls("c")) == (
        2,
        1,
        0,
    )


def test_it_starts_again_from_zero_after_an_idle_hour(
    embedded: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    flaky("old")
    later = demo_tasks.time.time() + demo_tasks.FLAKY_TTL_S + 1
    monkeypatch.setattr(demo_tasks.time, "time", lambda: later)

    assert demo_tasks.flaky_calls("old") == 0
    assert flaky("old", failures=0).value == {"call": 1, "value": None}


@pytest.mark.slow
def test_it_shares_the_count_with_another_process_without_redis(embedded: Path) -> None:
    flaky("across")
    script = (
        "import django; django.setup(); "
        "from recovery.calls import task_registry; "
        "r = task_registry.run('recovery.demo_tasks.flaky', [], {'key': 'across', 'failures': 1}); "
        "print(r.ok, r.value)"
    )
    env = {
        "PATH": "/usr/bin:/bin",
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "REBOUND_MODE": "embedded",
        "DATA_DIR": str(embedded),
    }

    done = subprocess.run(
        [PYTHON, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )

    assert done.stdout.strip() == "True {'call': 2, 'value': None}", done.stderr[-2000:]
    assert demo_tasks.flaky_calls("across") == 2
