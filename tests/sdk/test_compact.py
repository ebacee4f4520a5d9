"""The SDK's compact batches: each service's outcomes in order, plain successes as runs, the drops told with the
next batch; and single outcomes for a server that does not know runs."""

from __future__ import annotations

import json
from typing import Any

import httpx

from rebound_client import Client
from rebound_client._common import _knows_no_runs
from rebound_client._core import RUN_MAX, Encoder

OLD_SERVER_400 = {
    "detail": "Invalid input: outcomes[0].success: Field required; ...",
    "code": "invalid",
    "errors": [
        {"field": "outcomes[0].success", "message": "Field required"},
        {"field": "outcomes[0].successes", "message": "Extra inputs are not permitted"},
        {"field": "outcomes[0].durations_ms", "message": "Extra inputs are not permitted"},
        {"field": "dropped", "message": "Extra inputs are not permitted"},
    ],
}


def _outcomes(bodies: list[tuple[bytes, Any, int]]) -> list[dict[str, Any]]:
    return [o for body, _, _ in bodies for o in json.loads(body)["outcomes"]]


def test_it_keeps_each_services_outcomes_in_order_as_runs() -> None:
    failure = ("a", "op", 0.2, False, {"type": "E"}, "", "", None)
    batch = [("a", "op", 0.001), ("b", "op", 0.002), ("a", "op", 0.003), failure, ("a", "op", 0.004)]
    items = _outcomes(Encoder(max_items=100).bodies(batch))
    assert [(o["service"], o.get("successes"), o.get("durations_ms")) for o in items] == [
        ("a", 2, [1.0, 3.0]),
        ("a", None, None),
        ("a", 1, [4.0]),
        ("b", 1, [2.0]),
    ]


def test_it_cuts_a_long_run_into_items_of_at_most_run_max() -> None:
    batch = [("a", "op", 0.001)] * (RUN_MAX + 5)
    bodies = Encoder(max_items=100, max_bytes=10_000_000).bodies(batch)
    assert [o["successes"] for o in _outcomes(bodies)] == [RUN_MAX, 5]
    assert sum(len(part) for _, part, _ in bodies) == RUN_MAX + 5


def test_it_tells_the_drops_in_the_first_body_only() -> None:
    batch = [("a", f"op{i}", 0.001) for i in range(4)]
    bodies = Encoder(max_items=2).bodies(batch, dropped=7)
    assert [json.loads(body).get("dropped") for body, _, _ in bodies] == [7, None]
    assert [told for _, _, told in bodies] == [7, 0]


def test_it_never_sends_a_duration_that_is_no_number() -> None:
    body, _, _ = Encoder(max_items=10).bodies([("a", "op", float("nan")), ("a", "op", -1.0)])[0]
    assert json.loads(body)["outcomes"][0]["durations_ms"] == [0.0, 0.0]


def test_it_recognises_a_server_that_does_not_know_runs() -> None:
    assert _knows_no_runs(OLD_SERVER_400)
    assert not _knows_no_runs(
        {"errors": [{"field": "outcomes[0].durations_ms", "message": "4 durations for 5"}]}
    )


class OldServer:
    """Answers a snapshot, refuses runs as a server older than the compact form does, takes single outcomes."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/breakers/snapshot"):
            return httpx.Response(200, json={"last_event_id": 0, "server_time": None, "breakers": []})
        if request.url.path.endswith("/breakers/events"):
            return httpx.Response(200, json={"events": [], "last_id": 0})
        body = json.loads(request.content)
        self.bodies.append(body)
        if "dropped" in body or any("successes" in o for o in body["outcomes"]):
            return httpx.Response(400, json=OLD_SERVER_400)
        results = [{"service": o["service"], "state": "closed", "transition": None} for o in body["outcomes"]]
        return httpx.Response(200, json={"results": results})


def test_it_sends_single_outcomes_to_a_server_that_does_not_know_runs() -> None:
    server = OldServer()
    client = Client(
        "http://rebound.test",
        "rb_key",
        flush_interval_s=3600,
        flush_at=10_000,
        transport=httpx.MockTransport(server),
    )
    try:
        for _ in range(5):
            with client.guard("svc", operation="op"):
                pass
        assert client.flush(timeout_s=5)
        stats = client.stats()
        assert (stats["delivered"], stats["rejected"], stats["queued"]) == (5, 0, 0)
        assert sum(len(b["outcomes"]) for b in server.bodies[1:]) == 5
        assert all("success" in o for b in server.bodies[1:] for o in b["outcomes"])
    finally:
        client.close()
