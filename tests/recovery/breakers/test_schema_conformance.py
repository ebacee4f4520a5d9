"""Issue 11, items 7 and 9: what the breakers' endpoints answer is what /api/schema/ says, status for status and
body for body, and every number they take has its range in the schema and is refused outside it with a 400
naming it."""

from __future__ import annotations

import functools
from datetime import timedelta
from typing import Any

import pytest
from django.test import override_settings
from django.utils import timezone
from drf_spectacular.generators import SchemaGenerator
from jsonschema import Draft202012Validator
from referencing import Registry
from referencing.jsonschema import DRAFT202012
from rest_framework.test import APIClient

from recovery.breakers.models import Service
from tests.support.factories import rebound_settings

pytestmark = pytest.mark.django_db

FAIL_503 = {"service": "svc", "success": False, "error": {"status_code": 503}}


@functools.cache
def _document() -> dict[str, Any]:
    return SchemaGenerator().get_schema(request=None, public=True)  # type: ignore[no-any-return]


def component(name: str) -> dict[str, Any]:
    return _document()["components"]["schemas"][name]  # type: ignore[no-any-return]


def conforms(response: Any, method: str, path: str) -> None:
    """The status is documented for the operation, and the body is valid against the schema given for it."""
    operation = _document()["paths"][path][method]
    assert str(response.status_code) in operation["responses"], (response.status_code, response.content[:300])
    answer = operation["responses"][str(response.status_code)]
    schema = answer["content"]["application/json"]["schema"]
    registry: Registry[Any] = Registry().with_resource(
        "urn:rebound", DRAFT202012.create_resource(_document())
    )
    resolved = {"$ref": "urn:rebound#/" + schema["$ref"].removeprefix("#/")} if "$ref" in schema else schema
    validator = Draft202012Validator(resolved, registry=registry)
    problems = [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(response.json())
    ]
    assert problems == []


@pytest.fixture
def svc() -> Service:
    return Service.objects.create(name="svc", minimum_calls=4, window_size=10, consecutive_failures=0)


def tripped(client: APIClient) -> None:
    assert client.post("/api/v1/outcomes", [FAIL_503] * 4, format="json").status_code == 200


# --- bodies as the schema says -----------------------------------------------------------------------------


def test_the_breakers_are_a_list_as_the_schema_says(svc: Service, agent_client: APIClient) -> None:
    Service.objects.create(name="other", override="forced_open", override_reason="incident")
    tripped(agent_client)
    response = agent_client.get("/api/v1/breakers")
    assert isinstance(response.json(), list) and len(response.json()) == 2
    assert component("BreakerList")["type"] == "array"
    conforms(response, "get", "/api/v1/breakers")


def test_a_breaker_its_snapshot_and_an_override_hold_to_their_schemas(
    svc: Service, agent_client: APIClient, operator_client: APIClient
) -> None:
    tripped(agent_client)
    conforms(agent_client.get("/api/v1/breakers/svc"), "get", "/api/v1/breakers/{service}")
    conforms(agent_client.get("/api/v1/breakers/snapshot"), "get", "/api/v1/breakers/snapshot")
    until = (timezone.now() + timedelta(hours=1)).isoformat()
    body = {"mode": "forced_open", "reason": "incident", "expires_at": until}
    response = operator_client.post("/api/v1/breakers/svc/override", body, format="json")
    conforms(response, "post", "/api/v1/breakers/{service}/override")


def test_one_outcome_and_a_batch_hold_to_their_schema(svc: Service, agent_client: APIClient) -> None:
    one = agent_client.post("/api/v1/outcomes", FAIL_503, format="json")
    assert "results" not in one.json()
    conforms(one, "post", "/api/v1/outcomes")
    batch = agent_client.post("/api/v1/outcomes", {"outcomes": [FAIL_503] * 4}, format="json")
    assert len(batch.json()["results"]) == 4
    assert any(r["transition"] is not None for r in batch.json()["results"])
    conforms(batch, "post", "/api/v1/outcomes")
    listed = agent_client.post("/api/v1/outcomes", [FAIL_503], format="json")
    conforms(listed, "post", "/api/v1/outcomes")


def test_the_batch_answer_is_documented(svc: Service) -> None:
    answer = _document()["paths"]["/api/v1/outcomes"]["post"]["responses"]["200"]["content"][
        "application/json"
    ]
    shapes = {s["$ref"].rsplit("/", 1)[1] for s in component("OutcomeAnswer")["anyOf"]}
    assert shapes == {"OutcomeOut", "OutcomeBatchOut"}
    assert {"Answer", "AnswerToAListOrABatch"} <= set(answer["examples"])
    assert "retry_after_capped" in component("OutcomeOut")["required"]


def test_permits_hold_to_their_schema(
    svc: Service, agent_client: APIClient, operator_client: APIClient
) -> None:
    conforms(agent_client.post("/api/v1/breakers/svc/permit"), "post", "/api/v1/breakers/{service}/permit")
    tripped(agent_client)
    conforms(agent_client.post("/api/v1/breakers/svc/permit"), "post", "/api/v1/breakers/{service}/permit")
    operator_client.post(
        "/api/v1/breakers/svc/override", {"mode": "forced_open", "reason": "x"}, format="json"
    )
    conforms(agent_client.post("/api/v1/breakers/svc/permit"), "post", "/api/v1/breakers/{service}/permit")


def test_events_and_services_hold_to_their_schemas(
    svc: Service, agent_client: APIClient, operator_client: APIClient
) -> None:
    tripped(agent_client)
    conforms(agent_client.get("/api/v1/breakers/events?after=0"), "get", "/api/v1/breakers/events")
    conforms(agent_client.get("/api/v1/services"), "get", "/api/v1/services")
    conforms(agent_client.get("/api/v1/services/svc"), "get", "/api/v1/services/{service}")
    patched = operator_client.patch("/api/v1/services/svc", {"window_size": 30, "reason": "r"}, format="json")
    conforms(patched, "patch", "/api/v1/services/{service}")


# --- every status each endpoint answers is documented, with its body -----------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "route", "body", "status"),
    [
        ("post", "/api/v1/breakers/Not%20A%20Slug/permit", "/api/v1/breakers/{service}/permit", None, 400),
        ("get", "/api/v1/breakers/nope", "/api/v1/breakers/{service}", None, 404),
        ("get", "/api/v1/breakers/Not%20A%20Slug", "/api/v1/breakers/{service}", None, 400),
        (
            "post",
            "/api/v1/breakers/nope/override",
            "/api/v1/breakers/{service}/override",
            {"mode": "forced_open", "reason": "x"},
            404,
        ),
        ("post", "/api/v1/breakers/svc/override", "/api/v1/breakers/{service}/override", {"mode": "x"}, 400),
        ("get", "/api/v1/services/nope", "/api/v1/services/{service}", None, 404),
        ("patch", "/api/v1/services/svc", "/api/v1/services/{service}", {"window_size": 0}, 400),
        (
            "patch",
            "/api/v1/services/svc",
            "/api/v1/services/{service}",
            {"description": None, "reason": "r"},
            400,
        ),
        ("post", "/api/v1/outcomes", "/api/v1/outcomes", [], 400),
        ("get", "/api/v1/breakers/events?after=x", "/api/v1/breakers/events", None, 400),
    ],
)
def test_every_error_an_endpoint_answers_is_documented(
    svc: Service,
    operator_client: APIClient,
    method: str,
    path: str,
    route: str,
    body: Any,
    status: int,
) -> None:
    response = (
        getattr(operator_client, method)(path, body, format="json")
        if body is not None
        else getattr(operator_client, method)(path)
    )
    assert response.status_code == status, response.content[:300]
    conforms(response, method, route)


@pytest.mark.parametrize(
    ("method", "path", "route"),
    [
        ("post", "/api/v1/outcomes", "/api/v1/outcomes"),
        ("post", "/api/v1/breakers/svc/override", "/api/v1/breakers/{service}/override"),
        ("patch", "/api/v1/services/svc", "/api/v1/services/{service}"),
    ],
)
def test_a_body_that_is_not_json_is_a_documented_415(
    svc: Service, operator_client: APIClient, method: str, path: str, route: str
) -> None:
    response = getattr(operator_client, method)(path, "a=1", content_type="application/x-www-form-urlencoded")
    assert response.status_code == 415
    conforms(response, method, route)


def test_agents_and_viewers_get_a_documented_403(
    svc: Service, agent_client: APIClient, viewer_client: APIClient
) -> None:
    override = {"mode": "forced_open", "reason": "x"}
    route = "/api/v1/breakers/{service}/override"
    conforms(agent_client.post("/api/v1/breakers/svc/override", override, format="json"), "post", route)
    conforms(viewer_client.post("/api/v1/breakers/svc/permit"), "post", "/api/v1/breakers/{service}/permit")
    conforms(viewer_client.post("/api/v1/outcomes", FAIL_503, format="json"), "post", "/api/v1/outcomes")


# --- numbers: a range in the schema, a 400 naming the field outside it --------------------------------------


@pytest.mark.parametrize("after", ["1e400", "NaN", "inf", "-1", "1.5", "9223372036854775808"])
def test_events_refuse_an_after_that_is_no_transition_id(agent_client: APIClient, after: str) -> None:
    response = agent_client.get(f"/api/v1/breakers/events?after={after}")
    assert response.status_code == 400, response.content[:300]
    assert [e["field"] for e in response.json()["errors"]] == ["after"]


@pytest.mark.parametrize("wait", ["1e400", "NaN", "-1", "3601"])
def test_events_refuse_a_wait_out_of_range(agent_client: APIClient, wait: str) -> None:
    response = agent_client.get(f"/api/v1/breakers/events?wait={wait}")
    assert response.status_code == 400
    assert [e["field"] for e in response.json()["errors"]] == ["wait"]


def test_the_stream_refuses_a_last_event_id_that_is_no_transition_id_in_json(agent_client: APIClient) -> None:
    response = agent_client.get("/api/v1/breakers/stream", HTTP_LAST_EVENT_ID="1e400")
    assert (response.status_code, response["Content-Type"]) == (400, "application/json")
    assert [e["field"] for e in response.json()["errors"]] == ["after"]
    conforms(response, "get", "/api/v1/breakers/stream")


@pytest.mark.parametrize("duration", [1e12, -1, "1e400"])
def test_an_outcome_refuses_a_duration_out_of_range(
    svc: Service, agent_client: APIClient, duration: Any
) -> None:
    body = f'{{"service": "svc", "success": true, "duration_ms": {duration}}}'
    response = agent_client.post("/api/v1/outcomes", body, content_type="application/json")
    assert response.status_code == 400, response.content[:300]
    assert any("duration_ms" in e["field"] for e in response.json()["errors"]), response.json()
    assert not Service.objects.get(name="svc").transitions.exists()


def test_every_number_the_breakers_take_has_a_documented_range() -> None:
    outcome = component("OutcomeIn")["properties"]["duration_ms"]["anyOf"][0]
    assert (outcome["minimum"], outcome["maximum"]) == (0, 86_400_000)
    patch = component("PatchedServicePatchInRequest")["properties"]
    ranged = {
        name: (spec.get("minimum"), spec.get("maximum"))
        for name, spec in patch.items()
        if spec.get("type") in ("integer", "number")
    }
    assert len(ranged) == 10  # the thresholds, sizes, counts, waits and the multiplier
    assert all(low is not None and high is not None for low, high in ranged.values()), ranged
    assert ranged["wait_duration_s"] == (0.001, 2_592_000)
    assert ranged["wait_multiplier"] == (1, 100)
    parameters = {
        p["name"]: p["schema"] for p in _document()["paths"]["/api/v1/breakers/events"]["get"]["parameters"]
    }
    assert parameters["after"] == {"type": "integer", "minimum": 0, "maximum": 2**63 - 1}
    assert parameters["wait"] == {"type": "number", "minimum": 0, "maximum": 3600}


@pytest.mark.parametrize(
    ("when", "status"), [("2999-01-01T00:00:00+23:59", 200), ("9999-12-31T23:59:59-23:59", 400)]
)
def test_an_expiry_with_any_offset_is_kept_in_utc_or_refused(
    svc: Service, operator_client: APIClient, when: str, status: int
) -> None:
    # PostgreSQL refuses offsets beyond ±15:59 that RFC 3339 allows: never a 500.
    body = {"mode": "forced_open", "reason": "x", "expires_at": when}
    response = operator_client.post("/api/v1/breakers/svc/override", body, format="json")
    assert response.status_code == status, response.content[:300]
    conforms(response, "post", "/api/v1/breakers/{service}/override")
    if status == 400:
        assert [e["field"] for e in response.json()["errors"]] == ["expires_at"]
    else:
        assert response.json()["override"]["until"] == "2998-12-31T00:01:00Z"


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_it_documents_each_event_of_the_stream_as_it_is_sent(svc: Service, agent_client: APIClient) -> None:
    tripped(agent_client)
    with override_settings(REBOUND=rebound_settings(BREAKER_STREAM_MAX_SECONDS=0.5)):
        response = agent_client.get("/api/v1/breakers/stream?after=0")
        text = b"".join(response.streaming_content).decode()
    schema = _document()["paths"]["/api/v1/breakers/stream"]["get"]["responses"]["200"]
    validator = Draft202012Validator(schema["content"]["text/event-stream"]["schema"])
    events = [dict(line.split(": ", 1) for line in block.splitlines()) for block in text.split("\n\n")]
    events = [e for e in events if "data" in e]  # the retry line and keep-alives carry no data
    assert events and all(not list(validator.iter_errors(e)) for e in events)
