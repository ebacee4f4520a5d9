"""The checkpoint codec at its edges: orjson's canonical form, and what orjson alone would get wrong or refuse
(integers beyond 64 bits, NaN and Infinity, deep nesting, objects that are not JSON), over HTTP and in-process.
Every state that is stored is read back through the SHA-256 check."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import orjson
import pytest
from rest_framework.test import APIClient

from core.access.models import Agent
from core.api.errors import InvalidInput
from recovery.checkpoints import codec as checkpoint_codec
from recovery.checkpoints import services as checkpoint_services
from recovery.checkpoints.codec import decode
from recovery.checkpoints.models import Checkpoint, Task

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]

PATH = "/api/v1/tasks/job-1/checkpoints"


def post(client: APIClient, body: bytes) -> Any:
    return client.post(PATH, body, content_type="application/json")


def stdlib_form(state: Any) -> bytes:
    """The standard library's canonical form: the fallback for states orjson cannot write."""
    return json.dumps(state, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def assert_stored(client: APIClient, expected: bytes, state: Any) -> None:
    """Checkpoint 1 of job-1 holds exactly `expected`, with its size and SHA-256, and reads back as `state`."""
    agent: Agent = client.agent  # type: ignore[attr-defined]
    stored = Checkpoint.objects.get(task__agent=agent, task__task_id="job-1", seq=1)
    assert decode(stored) == expected  # decode checks the size and the SHA-256
    assert stored.sha256 == hashlib.sha256(expected).hexdigest()
    assert stored.size_bytes == len(expected)
    latest = client.get(f"{PATH}/latest")
    assert latest.status_code == 200
    assert latest.content.endswith(b',"state":' + expected + b"}")
    assert latest.json()["state"] == state
    assert latest.json()["sha256"] == stored.sha256


def assert_nothing_stored() -> None:
    assert not Task.objects.exists()
    assert not Checkpoint.objects.exists()


# --- the canonical form ------------------------------------------------------------------------------------


def test_it_stores_orjsons_form_with_sorted_keys(agent_client: APIClient) -> None:
    body = '{"state": {"b": [1e-05, 1E16, 0.1, 2.5, -0.0, 100], "a": "café 東京\u2028\\n", "c": null, "d": true}}'

    response = post(agent_client, body.encode())

    assert response.status_code == 201, response.json()
    # Compact, keys sorted, UTF-8 as is (U+2028 too), and orjson's floats: 0.00001 where json writes 1e-05.
    expected = '{"a":"café 東京\u2028\\n","b":[0.00001,1e+16,0.1,2.5,-0.0,100],"c":null,"d":true}'.encode()
    assert response.json()["sha256"] == hashlib.sha256(expected).hexdigest()
    assert response.json()["size_bytes"] == len(expected)
    state = {"a": "café 東京\u2028\n", "b": [1e-05, 1e16, 0.1, 2.5, -0.0, 100], "c": None, "d": True}
    assert_stored(agent_client, expected, state)


def test_it_gives_the_same_bytes_in_process_and_over_http(agent_client: APIClient) -> None:
    state = {"z": [{"y": 1, "x": 0.5}], "a": None}

    post(agent_client, json.dumps({"state": state}, indent=3).encode())

    saved = checkpoint_services.save_checkpoint(agent=agent_client.agent, task_id="job-2", state=state)  # type: ignore[attr-defined]
    http = Checkpoint.objects.get(task__task_id="job-1")
    assert decode(saved) == decode(http) == b'{"a":null,"z":[{"x":0.5,"y":1}]}'
    assert saved.sha256 == http.sha256


def test_it_reads_a_long_run_of_digits_in_a_string_exactly_and_stores_orjsons_form(
    agent_client: APIClient,
) -> None:
    # 19 digits in a row send the body to the standard library's parser; the form depends on the state alone.
    state = {"id": "12345678901234567890123", "f": 1e-05}

    response = post(agent_client, json.dumps({"state": state}).encode())

    assert response.status_code == 201, response.json()
    assert_stored(agent_client, b'{"f":0.00001,"id":"12345678901234567890123"}', state)


# --- integers beyond 64 bits ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "number",
    [2**64, -(2**63) - 1, 10**30, 2**128 - 1, 2**64 - 1, -(2**63)],
    ids=["2^64", "-2^63-1", "10^30", "2^128-1", "2^64-1", "-2^63"],
)
def test_it_keeps_integers_beyond_64_bits_exactly(agent_client: APIClient, number: int) -> None:
    # orjson would read 2^64 as the float 1.8446744073709552e+19: the body goes to the standard library.
    body = b'{"state": {"id": %d, "x": 0.5}, "metadata": {"big": %d}}' % (number, number)

    response = post(agent_client, body)

    assert response.status_code == 201, response.json()
    state = {"id": number, "x": 0.5}
    # orjson writes integers within 64 bits; beyond, the state gets the standard library's form.
    expected = b'{"id":%d,"x":0.5}' % number
    assert expected == stdlib_form(state) == (orjson.dumps(state) if -(2**63) <= number < 2**64 else expected)
    assert_stored(agent_client, expected, state)
    assert Checkpoint.objects.get().metadata == {"big": number}


def test_it_keeps_an_integer_beyond_64_bits_in_process(agent_client: APIClient) -> None:
    state = {"uuid_int": 2**127 + 1, "small": 1e-05}

    saved = checkpoint_services.save_checkpoint(agent=agent_client.agent, task_id="job-1", state=state)  # type: ignore[attr-defined]

    # The standard library's form throughout, floats included (1e-05): the choice is the state's, not a mix.
    assert decode(saved) == b'{"small":1e-05,"uuid_int":170141183460469231731687303715884105729}'
    assert_stored(agent_client, decode(saved), state)


# --- NaN, Infinity, numbers beyond a double -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b'{"state": Infinity}', "Infinity is not JSON"),
        (b'{"state": {"a": -Infinity}}', "-Infinity is not JSON"),
        (b'{"state": [NaN]}', "NaN is not JSON"),
        (b'{"state": 1e400}', "1e400 is beyond a double's range"),
        (b'{"state": {"a": [-1E999]}}', "-1E999 is beyond a double's range"),
        (b'{"state": {"n": 123456789012345678901234567890, "f": 1e400}}', "1e400 is beyond a double's range"),
    ],
)
def test_it_refuses_nan_infinity_and_numbers_beyond_a_double_naming_the_body(
    agent_client: APIClient, body: bytes, says: str
) -> None:
    response = post(agent_client, body)

    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == "body"
    assert says in response.json()["detail"]
    assert_nothing_stored()


@pytest.mark.parametrize(
    "state",
    [
        {"a": float("nan")},
        {"a": [None, float("inf")]},
        {"a": None, "b": {"c": [1.5, float("-inf")]}},
        ({"a": float("nan")}, None),
        {"big": 2**70, "a": float("nan")},
    ],
    ids=["nan", "inf-beside-null", "nested", "tuple", "beyond-64-bits"],
)
def test_it_refuses_nan_and_infinity_from_in_process_callers(agent_client: APIClient, state: Any) -> None:
    # orjson would write them as null: the codec finds them and refuses, as the standard library did.
    with pytest.raises(InvalidInput) as refused:
        checkpoint_services.save_checkpoint(agent=agent_client.agent, task_id="job-1", state=state)  # type: ignore[attr-defined]

    assert refused.value.field == "state"
    assert "not storable JSON" in str(refused.value)
    assert_nothing_stored()


def test_it_stores_a_null_that_is_a_null(agent_client: APIClient) -> None:
    state = {"a": None, "b": [1.5, None, {"c": None}]}

    checkpoint_services.save_checkpoint(agent=agent_client.agent, task_id="job-1", state=state)  # type: ignore[attr-defined]

    assert_stored(agent_client, b'{"a":null,"b":[1.5,null,{"c":null}]}', state)


# --- what orjson cannot write, or would write though it is not JSON ------------------------------------------


def test_it_writes_non_string_keys_as_the_standard_library_did(agent_client: APIClient) -> None:
    # Not from JSON input; an in-process caller's int keys become strings, as before orjson.
    checkpoint_services.save_checkpoint(agent=agent_client.agent, task_id="job-1", state={2: "two", 1: "one"})  # type: ignore[attr-defined]

    assert_stored(agent_client, b'{"1":"one","2":"two"}', {"1": "one", "2": "two"})


@dataclasses.dataclass
class Point:
    x: int


@pytest.mark.parametrize(
    "value",
    [datetime(2026, 11, 22, tzinfo=UTC), date(2026, 11, 22), Decimal("1.5"), {1, 2}, b"bytes", Point(1)],
    ids=["datetime", "date", "decimal", "set", "bytes", "dataclass"],
)
def test_it_refuses_objects_that_are_not_json_in_process(agent_client: APIClient, value: Any) -> None:
    with pytest.raises(InvalidInput) as refused:
        checkpoint_services.save_checkpoint(agent=agent_client.agent, task_id="job-1", state={"v": value})  # type: ignore[attr-defined]

    assert refused.value.field == "state"
    assert "is not JSON serializable" in str(refused.value)
    assert_nothing_stored()


def test_it_stores_a_state_nested_deeper_than_orjson_writes(agent_client: APIClient) -> None:
    # orjson reads up to 1,024 levels but writes only 254: deeper states get the standard library's form.
    response = post(agent_client, b'{"state": ' + nested(300) + b"}")

    assert response.status_code == 201, response.json()
    assert_stored(agent_client, nested(300), json.loads(nested(300)))


@pytest.mark.parametrize(("depth", "field"), [(1020, "state"), (5000, "body")])
def test_it_refuses_a_state_nested_too_deeply_with_a_400(
    agent_client: APIClient, depth: int, field: str
) -> None:
    # 1,020 levels: read (orjson), too deep for either writer. 5,000: too deep to read at all. Never a 500.
    response = post(agent_client, b'{"state": ' + nested(depth) + b"}")

    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == field
    assert "nested too deeply" in response.json()["detail"]
    assert_nothing_stored()


def test_it_refuses_metadata_nested_too_deeply_naming_it(agent_client: APIClient) -> None:
    response = post(agent_client, b'{"state": {}, "metadata": {"a": ' + nested(1020) + b"}}")

    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == "metadata"
    assert "nested too deeply" in response.json()["detail"]
    assert_nothing_stored()


def test_it_refuses_a_lone_surrogate_naming_the_state(agent_client: APIClient) -> None:
    # Valid JSON syntax (the standard library reads it), but not a string UTF-8 can store.
    response = post(agent_client, b'{"state": {"a": "\\ud800"}}')

    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == "state"
    assert "not storable JSON" in response.json()["detail"]
    assert_nothing_stored()


def test_it_takes_a_body_with_a_byte_order_mark_as_before(agent_client: APIClient) -> None:
    # orjson refuses a BOM; the standard library, which read checkpoint bodies before, skips it.
    response = post(agent_client, b'\xef\xbb\xbf{"state": {"a": 1}}')

    assert response.status_code == 201, response.json()
    assert_stored(agent_client, b'{"a":1}', {"a": 1})


@pytest.mark.parametrize(
    "body", [b'{"state": 1} trailing', b'{"state": 01}', b"{'state': 1}", b'{"a":"\xff"}']
)
def test_it_still_refuses_a_body_that_is_not_json(agent_client: APIClient, body: bytes) -> None:
    response = post(agent_client, body)

    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == "body"
    assert response.json()["detail"].startswith("The body is not JSON: ")
    assert_nothing_stored()


def test_it_parses_and_writes_exactly() -> None:
    assert checkpoint_codec.parse_json(b'{"n": 18446744073709551616}') == {"n": 2**64}
    assert checkpoint_codec.parse_json(b'{"n": 18446744073709551615, "f": 0.1}') == {"n": 2**64 - 1, "f": 0.1}
    assert checkpoint_codec.parse_json(b'{"a": 1, "a": 2}') == {"a": 2}  # the last duplicate wins, as in json
    # Control characters escaped as json escapes them; tuples are lists.
    assert (
        checkpoint_codec.canonical_json({"b": "\x00\té", "a": (1, 2)})
        == b'{"a":[1,2],"b":"\\u0000\\t\xc3\xa9"}'
    )
