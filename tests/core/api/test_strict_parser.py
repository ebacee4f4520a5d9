"""The strict JSON parser: whatever the database or a later step cannot hold is refused with 400 naming the
field, before any view accepts it (issue 11, items 3 to 7, the parse-time part)."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
import redis
from django.conf import settings
from django.test import override_settings
from rest_framework.test import APIClient

from core.api import parsers
from core.api.errors import InvalidInput
from recovery.breakers.models import BreakerTransition, Service
from recovery.errors import intake
from recovery.errors.models import ErrorEvent
from tests.support.factories import rebound_settings

pytestmark = pytest.mark.django_db


def _post(client: APIClient, path: str, raw: bytes | str) -> Any:
    body = raw.encode() if isinstance(raw, str) else raw
    return client.generic("POST", path, body, content_type="application/json")


def _refusal(response: Any, status: int = 400) -> dict[str, Any]:
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/json")
    body: dict[str, Any] = response.json()
    assert set(body) == {"detail", "code", "errors"}
    return body


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def _parse(raw: bytes, encoding: str = "utf-8") -> Any:
    return parsers.StrictJSONParser().parse(io.BytesIO(raw), "application/json", {"encoding": encoding})


# --- depth (item 4) -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    ["/api/v1/errors", "/api/v1/outcomes", "/api/v1/recovery/plan", "/api/v1/tasks", "/api/v1/retries"],
)
def test_it_refuses_json_nested_1000_levels_deep_on_every_endpoint(
    agent_client: APIClient, path: str
) -> None:
    body = _refusal(_post(agent_client, path, _nested(1000)))
    assert body["code"] == "malformed"
    assert body["errors"][0]["field"] == "body"
    assert "400" in body["errors"][0]["message"]


def test_it_refuses_deep_nesting_inside_an_otherwise_valid_report(agent_client: APIClient) -> None:
    raw = '{"service": "svc", "context": {"a": ' + _nested(450) + "}}"
    body = _refusal(_post(agent_client, "/api/v1/errors", raw))
    assert body["code"] == "malformed"
    assert not ErrorEvent.objects.exists()


@pytest.mark.parametrize("limit", [5, 16, 17, 40])
def test_it_takes_json_exactly_as_deep_as_the_limit_and_no_deeper(limit: int) -> None:
    with override_settings(REBOUND=rebound_settings(API_MAX_JSON_DEPTH=limit)):
        assert _parse(_nested(limit).encode()) == json.loads(_nested(limit))
        mixed = '{"a": [' * (limit // 2) + "1" + "]}" * (limit // 2)
        assert _parse(mixed.encode()) == json.loads(mixed)
        with pytest.raises(InvalidInput) as refused:
            _parse(_nested(limit + 1).encode())
        assert refused.value.errors == [
            {"field": "body", "message": f"it is nested {limit + 1} levels deep; at most {limit}"}
        ]
        with pytest.raises(InvalidInput):
            _parse(("[" + mixed + "]").encode() if limit % 2 == 0 else ("[[" + mixed + "]]").encode())


@override_settings(REBOUND=rebound_settings(API_MAX_JSON_DEPTH=3))
def test_it_does_not_count_brackets_inside_strings_as_depth() -> None:
    text = '[{"a": "[[[[{{{{ \\" [[[[ \\\\"}]'
    assert _parse(text.encode()) == json.loads(text)


# --- NUL characters (item 5) and lone surrogates (item 3) ------------------------------------------------------


def test_it_names_the_field_that_holds_a_nul_character(agent_client: APIClient) -> None:
    raw = '{"errors": [{"service": "svc", "message": "ok"}, {"service": "svc", "message": "a\\u0000b"}]}'
    body = _refusal(_post(agent_client, "/api/v1/errors", raw))
    assert body["code"] == "invalid"
    assert body["errors"] == [
        {"field": "errors[1].message", "message": "a NUL character (\\u0000) is not allowed in text"}
    ]
    assert not ErrorEvent.objects.exists()


def test_it_names_the_object_whose_key_holds_a_nul_character(agent_client: APIClient) -> None:
    body = _refusal(_post(agent_client, "/api/v1/errors", '{"service": "svc", "context": {"k\\u0000": 1}}'))
    assert body["errors"] == [
        {"field": 'context["k\\u0000"]', "message": "a NUL character (\\u0000) is not allowed in a key"}
    ]


@pytest.mark.parametrize("escape", ["\\ud800", "\\udfff", "x\\udc00y", "\\ud83d"])
def test_it_refuses_a_lone_surrogate_naming_the_field(agent_client: APIClient, escape: str) -> None:
    raw = '{"service": "svc", "type": "T", "message": "' + escape + '"}'
    body = _refusal(_post(agent_client, "/api/v1/errors", raw))
    assert body["errors"] == [
        {"field": "message", "message": "a lone surrogate (\\ud800 to \\udfff) is not text UTF-8 can hold"}
    ]
    assert not ErrorEvent.objects.exists()


def test_it_keeps_a_surrogate_pair_and_raw_utf8_as_the_character_they_are(agent_client: APIClient) -> None:
    raw = '{"service": "svc", "message": "\\ud83d\\ude00 and \u00e9\u6f22"}'.encode()
    response = _post(agent_client, "/api/v1/errors", raw)
    assert response.status_code == 201, response.content
    assert ErrorEvent.objects.get().message == "\U0001f600 and \u00e9\u6f22"


def test_it_refuses_a_body_that_is_not_utf8(agent_client: APIClient) -> None:
    body = _refusal(_post(agent_client, "/api/v1/errors", b'{"service": "svc", "message": "\xff\xfe"}'))
    assert body["code"] == "malformed"
    assert body["errors"][0]["field"] == "body"
    assert "UTF-8" in body["errors"][0]["message"]


def test_it_refuses_utf8_encoded_surrogates() -> None:
    with pytest.raises(InvalidInput) as refused:
        _parse(b'{"message": "\xed\xa0\x80"}')
    assert refused.value.errors[0]["field"] == "body"


# --- numbers (items 3 and 7) ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("literal", "said"),
    [
        ("NaN", "NaN is not a number JSON allows"),
        ("Infinity", "Infinity is not a number JSON allows"),
        ("-Infinity", "-Infinity is not a number JSON allows"),
        ("1e400", "1e400 is beyond the range of a double"),
        ("-1e400", "-1e400 is beyond the range of a double"),
    ],
)
def test_it_refuses_a_number_that_is_not_finite_naming_the_field(
    agent_client: APIClient, literal: str, said: str
) -> None:
    raw = '[{"service": "svc", "success": true, "duration_ms": ' + literal + "}]"
    body = _refusal(_post(agent_client, "/api/v1/outcomes", raw))
    assert body["errors"] == [{"field": "[0].duration_ms", "message": said}]


@pytest.mark.parametrize("literal", ["9223372036854775808", "-9223372036854775809", "1" + "0" * 40])
def test_it_refuses_an_integer_beyond_64_bits_naming_the_field(agent_client: APIClient, literal: str) -> None:
    raw = '{"service": "svc", "status_code": ' + literal + "}"
    body = _refusal(_post(agent_client, "/api/v1/errors", raw))
    assert body["errors"] == [
        {
            "field": "status_code",
            "message": "an integer must be between -9223372036854775808 and 9223372036854775807 "
            "(send larger numbers as strings)",
        }
    ]


def test_it_reads_the_largest_integers_exactly() -> None:
    raw = b'{"a": [9223372036854775807, -9223372036854775808, "12345678901234567890123"], "b": 1.5e300}'
    assert _parse(raw) == {
        "a": [9223372036854775807, -9223372036854775808, "12345678901234567890123"],
        "b": 1.5e300,
    }


def test_it_refuses_an_integer_too_long_to_read() -> None:
    with pytest.raises(InvalidInput) as refused:
        _parse(b'{"a": ' + b"7" * 5000 + b"}")
    assert refused.value.errors[0]["field"] in {"a", "body"}


def test_it_lists_every_field_at_fault() -> None:
    with pytest.raises(InvalidInput) as refused:
        _parse(b'{"a": "\\u0000", "b": [1, NaN], "c": {"d": 1e999}}')
    assert [e["field"] for e in refused.value.errors] == ["a", "b[1]", "c.d"]


def test_it_still_says_where_json_is_broken(agent_client: APIClient) -> None:
    body = _refusal(_post(agent_client, "/api/v1/errors", '{"service": "svc",'))
    assert body["code"] == "malformed"
    assert body["errors"][0]["field"] == "body"
    assert "line 1" in body["errors"][0]["message"]


def test_it_reads_another_charset_when_the_request_names_it() -> None:
    assert _parse('{"m": "caf\u00e9"}'.encode("latin-1"), encoding="latin-1") == {"m": "caf\u00e9"}


# --- nothing refusable is accepted: the buffered intake (item 3) and the breaker (item 6) ------------------


@pytest.mark.redis
@override_settings(REBOUND=rebound_settings(INTAKE_MODE="buffered"))
@pytest.mark.parametrize(
    "raw",
    [
        '{"service": "svc", "message": "a\\u0000b"}',
        '{"service": "svc", "message": "\\udfff"}',
        '{"service": "svc", "retry_after": 1e400}',
    ],
)
def test_the_buffered_intake_refuses_before_it_accepts(agent_client: APIClient, raw: str) -> None:
    _refusal(_post(agent_client, "/api/v1/errors", raw))
    assert redis.Redis.from_url(settings.TEST_REDIS_URL).xlen(intake.STREAM) == 0
    assert not ErrorEvent.objects.exists()


@pytest.mark.redis
def test_an_outcome_whose_error_type_holds_a_nul_changes_no_breaker(agent_client: APIClient) -> None:
    Service.objects.create(name="svc", minimum_calls=1, window_size=2, consecutive_failures=1)
    raw = '[{"service": "svc", "success": false, "error": {"type": "Boom\\u0000", "status_code": 503}}]'
    body = _refusal(_post(agent_client, "/api/v1/outcomes", raw))
    assert body["errors"] == [
        {"field": "[0].error.type", "message": "a NUL character (\\u0000) is not allowed in text"}
    ]
    assert agent_client.post("/api/v1/breakers/svc/permit").json()["state"] == "closed"
    assert not BreakerTransition.objects.exists()


def test_it_refuses_a_charset_that_is_not_a_text_encoding(agent_client: APIClient) -> None:
    response = agent_client.generic(
        "POST", "/api/v1/errors", b'{"service": "svc"}', content_type="application/json; charset=bz2_codec"
    )
    body = _refusal(response)
    assert body["code"] == "malformed"
