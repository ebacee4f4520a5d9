"""get_fallback_status, called as a plain function with a verified caller: the chain exactly as GET
/api/v1/fallbacks/{service} answers it, the service's cached results with their age, and the REST view's
refusals naming the same fields."""

from __future__ import annotations

from typing import Any

import pytest
import redis
from django.test import override_settings

from core.api.errors import Forbidden, InvalidInput, NotFound
from mcp_server import callers
from mcp_server.tools.fallbacks import get_fallback_status
from recovery.breakers.models import Service
from recovery.decisions import fallbacks
from recovery.decisions.fallbacks import ResultCache
from recovery.decisions.models import FallbackOption
from tests.support import factories
from tests.support.factories import rebound_settings
from tests.support.result_cache import NOW
from tests.support.result_cache import result_cache as result_cache

pytestmark = pytest.mark.django_db


@pytest.fixture
def svc() -> Service:
    return Service.objects.create(name="svc")


def option(service: Service, position: int, kind: str, **fields: Any) -> FallbackOption:
    return FallbackOption.objects.create(service=service, position=position, kind=kind, **fields)


def test_its_chain_is_the_rest_apis_answer(
    svc: Service, result_cache: ResultCache, agent_client: Any, agent_caller: callers.Caller
) -> None:
    up = Service.objects.create(name="up")
    option(svc, 1, "service", target_service=up)
    option(svc, 2, "cache", max_age_s=60)
    option(svc, 3, "static", static_value={"items": []}, operation="search")
    option(svc, 4, "skip", warning="partial")
    result_cache.put_many([("svc", "search", "q=cats", ["a cat"])], at=NOW - 30)
    query = {"operation": "search", "cache_key": "q=cats"}
    rest = agent_client.get("/api/v1/fallbacks/svc", query)
    assert rest.status_code == 200

    answer = get_fallback_status(agent_caller, service="svc", **query)

    assert answer.model_dump(mode="json")["chain"] == rest.json()
    assert [o.kind for o in answer.chain.chain] == ["static", "service", "cache", "skip"]
    assert (answer.chain.chain[2].available, answer.chain.chain[2].age_s) == (True, 30.0)


def test_it_lists_the_services_cached_results_newest_first_with_their_age(
    svc: Service, result_cache: ResultCache, agent_caller: callers.Caller
) -> None:
    result_cache.put_many([("svc", "search", "q=cats", ["a cat"])], at=NOW - 30)
    result_cache.put_many([("svc", "status", "", {"ok": 1})], at=NOW - 5)
    result_cache.put_many([("up", "status", "", {"ok": 1})], at=NOW)

    with override_settings(REBOUND=rebound_settings(RESULT_CACHE_TTL_SECONDS=600)):
        cache = get_fallback_status(agent_caller, service="svc").cache

    assert (cache.count, cache.ttl_s) == (2, 600)
    assert [(e.operation, e.cache_key, e.age_s) for e in cache.entries] == [
        ("status", "", 5.0),
        ("search", "q=cats", 30.0),
    ]
    assert cache.entries[0].cached_at.timestamp() == NOW - 5
    assert all(e.bytes > 0 for e in cache.entries)


def test_it_lists_only_the_operations_cached_results_when_one_is_named(
    svc: Service, result_cache: ResultCache, agent_caller: callers.Caller
) -> None:
    result_cache.put_many([("svc", "search", "a", 1), ("svc", "search", "b", 2), ("svc", "status", "", 3)])

    cache = get_fallback_status(agent_caller, service="svc", operation="search").cache

    assert (cache.count, sorted(e.cache_key for e in cache.entries)) == (2, ["a", "b"])


def test_it_answers_with_no_cached_results_when_redis_is_unreachable(
    svc: Service, agent_caller: callers.Caller
) -> None:
    class Unreachable(ResultCache):
        def _redis(self) -> redis.Redis:
            return redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2, socket_timeout=0.2)

    option(svc, 1, "cache")
    fallbacks.use_results(Unreachable())
    try:
        answer = get_fallback_status(agent_caller, service="svc")
    finally:
        fallbacks.use_results(None)

    assert (answer.cache.count, answer.cache.entries) == (0, [])
    assert answer.chain.chain[0].why.startswith("the result cache is unreachable")


def test_it_answers_not_found_naming_service_for_an_unknown_service(agent_caller: callers.Caller) -> None:
    with pytest.raises(NotFound) as raised:
        get_fallback_status(agent_caller, service="nope")
    assert raised.value.field == "service"
    assert not Service.objects.filter(name="nope").exists()


def test_it_refuses_a_service_that_is_no_slug_naming_service(agent_caller: callers.Caller) -> None:
    with pytest.raises(InvalidInput) as raised:
        get_fallback_status(agent_caller, service="Bad Name")
    assert [e["field"] for e in raised.value.errors] == ["service"]


def test_it_refuses_a_bad_operation_naming_operation(svc: Service, agent_caller: callers.Caller) -> None:
    with pytest.raises(InvalidInput) as raised:
        get_fallback_status(agent_caller, service="svc", operation="x" * 201)
    assert [e["field"] for e in raised.value.errors] == ["operation"]


def test_it_refuses_a_cache_key_too_long_naming_cache_key(svc: Service, agent_caller: callers.Caller) -> None:
    with pytest.raises(InvalidInput) as raised:
        get_fallback_status(agent_caller, service="svc", cache_key="k" * 501)
    assert [e["field"] for e in raised.value.errors] == ["cache_key"]


def test_it_answers_a_viewers_key(svc: Service, viewer_caller: callers.Caller) -> None:
    assert get_fallback_status(viewer_caller, service="svc").chain.exhausted is True


def test_it_refuses_the_key_of_a_user_without_a_role(svc: Service) -> None:
    caller = callers.authenticate(factories.user_key(factories.UserFactory(is_staff=False)))
    with pytest.raises(Forbidden, match="get_fallback_status"):
        get_fallback_status(caller, service="svc")
