"""The fallback result cache on both of its backends, with a clock the test sets (no tests here). Use the fixture
with `from tests.support.result_cache import result_cache as result_cache`."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from django.core.cache.backends.locmem import LocMemCache

from recovery.decisions import fallbacks
from recovery.decisions.fallbacks import ResultCache

NOW = 1_800_000_000.0


class Clock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=[pytest.param("redis", marks=pytest.mark.redis), "embedded"])
def result_cache(request: Any, settings: Any) -> Iterator[ResultCache]:
    """The cache in Redis, and in the embedded mode's local memory, installed as the one the services use."""
    if request.param == "embedded":
        settings.REDIS_URL = ""
        chosen = ResultCache(LocMemCache(f"results-{uuid.uuid4()}", {}), clock=Clock())
    else:
        chosen = ResultCache(clock=Clock())
    fallbacks.use_results(chosen)
    yield chosen
    fallbacks.use_results(None)
