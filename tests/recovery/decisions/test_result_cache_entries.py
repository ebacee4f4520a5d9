"""Listing a service's cached results (ResultCache.entries, fallbacks.cached_entries), in Redis and in the embedded
mode's local-memory cache: by operation, newest first, with their age and size; results stored before entries
named their operation; and an unreachable Redis answering none."""

from __future__ import annotations

import json
from typing import Any

import pytest
import redis
from django.conf import settings

from recovery.decisions import fallbacks
from recovery.decisions.fallbacks import CACHE_KEY_SHOWN, ResultCache, result_key
from tests.support.result_cache import NOW
from tests.support.result_cache import result_cache as result_cache

TEST_REDIS_URL: str = settings.TEST_REDIS_URL  # type: ignore[misc]
pytestmark = pytest.mark.django_db


def test_it_lists_a_services_results_newest_first_with_age_and_size(result_cache: ResultCache) -> None:
    result_cache.put_many([("svc", "search", "q=cats", ["a cat"])], at=NOW - 30)
    result_cache.put_many([("svc", "status", "", {"ok": 1})], at=NOW - 5)
    result_cache.put_many([("other", "search", "q=cats", ["not svc's"])], at=NOW)

    count, entries = result_cache.entries("svc")

    assert count == 2
    assert [(e.operation, e.cache_key, e.age_s) for e in entries] == [
        ("status", "", 5.0),
        ("search", "q=cats", 30.0),
    ]
    assert entries[0].cached_at.timestamp() == NOW - 5
    stored = {"v": {"ok": 1}, "at": NOW - 5, "op": "status", "ck": ""}
    assert entries[0].bytes == len(json.dumps(stored, separators=(",", ":")).encode())


def test_it_lists_only_the_operations_results_when_one_is_named(result_cache: ResultCache) -> None:
    result_cache.put_many([("svc", "search", "a", 1), ("svc", "search", "b", 2), ("svc", "status", "", 3)])

    count, entries = result_cache.entries("svc", "search")

    assert count == 2
    assert {e.cache_key for e in entries} == {"a", "b"}


def test_it_counts_every_result_but_lists_at_most_the_limit(result_cache: ResultCache) -> None:
    for i in range(5):
        result_cache.put_many([("svc", "search", f"q{i}", i)], at=NOW - i)

    count, entries = result_cache.entries("svc", limit=2)

    assert (count, [e.cache_key for e in entries]) == (5, ["q0", "q1"])


def test_it_keeps_only_the_start_of_a_long_cache_key(result_cache: ResultCache) -> None:
    long_key = "k" * 1000
    result_cache.put_many([("svc", "search", long_key, 1)])

    _, (entry,) = result_cache.entries("svc")

    assert entry.cache_key == long_key[:CACHE_KEY_SHOWN]
    found = result_cache.get("svc", "search", long_key)  # the result is still found by its whole key
    assert found is not None and found.value == 1


def test_it_lists_results_stored_before_entries_named_their_operation(result_cache: ResultCache) -> None:
    old = json.dumps({"v": 1, "at": NOW - 10})
    key = result_key("svc", "search", "q")
    if result_cache.backend is None:
        redis.Redis.from_url(TEST_REDIS_URL).set(key, old, ex=60)
    else:
        result_cache.backend.set(key, old, timeout=60)

    count, entries = result_cache.entries("svc")

    assert count == 1
    assert [(e.operation, e.cache_key, e.age_s) for e in entries] == [("", "", 10.0)]
    assert result_cache.entries("svc", "search")[0] == 0  # it cannot be told apart by operation


def test_it_lists_nothing_for_a_service_without_results(result_cache: ResultCache) -> None:
    assert result_cache.entries("svc") == (0, [])


def test_cached_entries_answers_what_entries_answers(result_cache: ResultCache) -> None:
    result_cache.put_many([("svc", "search", "q", 1)])
    assert fallbacks.cached_entries("svc", "search") == result_cache.entries("svc", "search")


def test_cached_entries_answers_none_when_redis_is_unreachable(
    settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    class Unreachable(ResultCache):
        def _redis(self) -> redis.Redis:
            return redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2, socket_timeout=0.2)

    fallbacks.use_results(Unreachable())
    try:
        assert fallbacks.cached_entries("svc") == (0, [])
    finally:
        fallbacks.use_results(None)
    assert "result cache unreachable" in caplog.text
