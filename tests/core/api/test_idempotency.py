"""Issue 11, item 27: `Idempotency-Key` (core/api/idempotency.py), on a view of its own, with each store: Redis
where it is configured, the database where it is not (the embedded mode) or cannot be reached."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.db import OperationalError
from django.test import override_settings
from django.utils import timezone
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.test import APIRequestFactory, force_authenticate
from rest_framework.views import APIView

from core.access.authentication import AgentPrincipal
from core.access.models import Agent
from core.api import idempotency
from recovery.errors.idempotency import DATABASE_STORE
from recovery.errors.models import IdempotencyRecord
from tests.support.factories import AgentFactory, UserFactory, rebound_settings

pytestmark = [pytest.mark.django_db]


class Counting(APIView):
    """Counts what it is asked to do; answers 201, or 400 for `{"bad": true}`, or raises for `{"boom": true}`."""

    calls: list[Any] = []
    permission_classes: list[Any] = []

    def post(self, request: Request) -> Response:
        return idempotency.with_idempotency(
            request, "test", lambda: self._run(request), database=DATABASE_STORE
        )

    def _run(self, request: Request) -> Response:
        Counting.calls.append(request.data)
        if request.data.get("bad"):
            return Response({"detail": "bad", "code": "invalid", "errors": []}, status=400)
        if request.data.get("boom"):
            raise RuntimeError("boom")
        if request.data.get("when"):
            return Response({"at": timezone.now(), "id": uuid.uuid4()}, status=201)
        return Response({"n": len(Counting.calls), "echo": request.data}, status=201)


@pytest.fixture(params=["redis", "database"])
def store(request: pytest.FixtureRequest, settings: Any) -> Iterator[str]:
    Counting.calls = []
    if request.param == "redis":
        if not settings.REDIS_AVAILABLE:
            pytest.skip("Redis not reachable")
        yield "redis"
    else:
        with override_settings(REDIS_URL=""):
            yield "database"
    Counting.calls = []


@pytest.fixture
def agent() -> Any:
    return AgentFactory()


def _post(body: dict[str, Any], key: str | None, who: Any, path: str = "/things") -> Response:
    headers = {} if key is None else {"HTTP_IDEMPOTENCY_KEY": key}
    request = APIRequestFactory().post(path, body, format="json", **headers)
    force_authenticate(request, user=AgentPrincipal(agent=who) if isinstance(who, Agent) else who)
    response: Response = Counting.as_view()(request)
    return response


def test_it_runs_every_request_without_a_key(store: str, agent: Any) -> None:
    _post({"a": 1}, None, agent)
    _post({"a": 1}, None, agent)
    assert len(Counting.calls) == 2


def test_a_repeat_is_run_once_and_answered_with_the_first_answer(store: str, agent: Any) -> None:
    first = _post({"a": 1}, "k-1", agent)
    again = _post({"a": 1}, "k-1", agent)
    assert len(Counting.calls) == 1
    assert (again.status_code, again.data) == (201, first.data)
    assert again.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert (IdempotencyRecord.objects.count() == 1) == (store == "database")


def test_the_same_body_written_differently_is_the_same_request(store: str, agent: Any) -> None:
    factory = APIRequestFactory()
    for text in ['{"a": 1, "b": [1, 2]}', '{"b":[1,2],"a":1}']:
        request = factory.post("/things", text, content_type="application/json", HTTP_IDEMPOTENCY_KEY="k")
        force_authenticate(request, user=AgentPrincipal(agent=agent))
        Counting.as_view()(request)
    assert len(Counting.calls) == 1


def test_the_same_key_with_another_body_is_422_naming_the_header(store: str, agent: Any) -> None:
    _post({"a": 1}, "k-2", agent)
    response = _post({"a": 2}, "k-2", agent)
    assert response.status_code == 422
    assert response.data["code"] == "idempotency_key_reused"
    assert response.data["errors"][0]["field"] == "Idempotency-Key"
    assert len(Counting.calls) == 1


def test_the_same_key_on_another_path_is_another_request(store: str, agent: Any) -> None:
    _post({"a": 1}, "k-3", agent)
    assert _post({"a": 1}, "k-3", agent, path="/other").status_code == 422


def test_a_repeat_while_the_first_runs_is_409_with_retry_after(store: str, agent: Any) -> None:
    def slow(request: Request) -> Response:
        inner = _post({"a": 1}, "k-4", agent)  # the client's retry, arriving while the first still runs
        Counting.calls.append("first")
        return Response({"inner": inner.status_code, "retry": inner.headers.get("Retry-After")}, status=201)

    original = Counting._run
    Counting._run = lambda self, request: slow(request)  # type: ignore[method-assign]
    try:
        first = _post({"a": 1}, "k-4", agent)
    finally:
        Counting._run = original  # type: ignore[method-assign]
    assert first.data == {"inner": 409, "retry": "1"}
    assert Counting.calls == ["first"]


def test_keys_are_per_caller(store: str, agent: Any) -> None:
    other = AgentFactory()
    user = UserFactory()
    for who in (agent, other, user):
        assert _post({"a": 1}, "shared", who).status_code == 201
    assert len(Counting.calls) == 3


def test_an_answer_that_is_not_a_success_frees_the_key(store: str, agent: Any) -> None:
    assert _post({"bad": True}, "k-5", agent).status_code == 400
    assert _post({"bad": True}, "k-5", agent).status_code == 400
    assert len(Counting.calls) == 2


def test_an_exception_frees_the_key(store: str, agent: Any) -> None:
    for _ in range(2):
        with pytest.raises(RuntimeError):
            _post({"boom": True}, "k-6", agent)
    assert len(Counting.calls) == 2


@pytest.mark.parametrize("key", ["", "x" * 256, "with space", "café"])
def test_a_key_that_is_not_visible_ascii_is_refused_naming_the_header(
    store: str, agent: Any, key: str
) -> None:
    response = _post({"a": 1}, key, agent)
    assert response.status_code == 400
    assert response.data["errors"][0]["field"] == "Idempotency-Key"
    assert Counting.calls == []


@pytest.mark.slow
def test_a_key_is_forgotten_after_its_time(store: str, agent: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    if store == "redis":
        monkeypatch.setattr(idempotency, "ttl_seconds", lambda: 1)
        _post({"a": 1}, "k-7", agent)
        time.sleep(1.2)
    else:
        _post({"a": 1}, "k-7", agent)
        IdempotencyRecord.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    assert "Idempotent-Replayed" not in _post({"a": 1}, "k-7", agent).headers
    assert len(Counting.calls) == 2


def test_a_claim_whose_request_died_lapses(agent: Any) -> None:
    with override_settings(REDIS_URL=""):
        assert DATABASE_STORE.claim("test:x:dead", "f", "t" * 32) is None  # a worker killed mid-request
        IdempotencyRecord.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
        assert DATABASE_STORE.claim("test:x:dead", "f", "u" * 32) is None
        assert IdempotencyRecord.objects.get().token == "u" * 32


@pytest.mark.redis
def test_with_redis_unreachable_the_database_keeps_the_keys(agent: Any) -> None:
    with override_settings(REDIS_URL="redis://127.0.0.1:1/0"):
        _post({"a": 1}, "k-8", agent)
        again = _post({"a": 1}, "k-8", agent)
    assert again.headers["Idempotent-Replayed"] == "true"
    assert IdempotencyRecord.objects.count() == 1
    Counting.calls = []


def test_with_no_store_reachable_it_answers_503_and_runs_nothing(
    agent: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    def down(*args: Any) -> None:
        raise OperationalError("database down")

    monkeypatch.setattr(DATABASE_STORE, "claim", down)
    with override_settings(REDIS_URL="redis://127.0.0.1:1/0"):
        response = _post({"a": 1}, "k-9", agent)
    assert response.status_code == 503
    assert Counting.calls == []


@override_settings(REBOUND=rebound_settings(IDEMPOTENCY_KEY_TTL_SECONDS=3600))
def test_the_database_keeps_a_key_for_the_configured_time(agent: Any) -> None:
    with override_settings(REDIS_URL=""):
        _post({"a": 1}, "k-10", agent)
    left = IdempotencyRecord.objects.get().expires_at - timezone.now()
    assert timedelta(seconds=3590) < left <= timedelta(seconds=3600)
    Counting.calls = []


def test_an_answer_with_dates_is_replayed_as_it_was_sent(store: str, agent: Any) -> None:
    first = _post({"when": True}, "k-11", agent).render()
    again = _post({"when": True}, "k-11", agent).render()
    assert again.content == first.content
    assert len(Counting.calls) == 1
