"""The API's one JSON parser (settings.REST_FRAMEWORK's DEFAULT_PARSER_CLASSES).

A body is refused here, with 400 naming the field, when it holds what no later step can keep: nesting deeper
than API_MAX_JSON_DEPTH (a recursion in every walk of it), a NUL character (PostgreSQL text cannot hold it), a
lone surrogate (not text UTF-8 can encode), a number that is not finite (NaN, Infinity, 1e400), an integer
beyond 64 bits (no integer column holds it; send larger numbers as strings), or bytes that are not UTF-8.
Refusing at the door means a view never answers "accepted" for what a write or a drain would drop later.

Fast on the hot path (the intake's batches): orjson reads the body (a third of the standard library's time) and
itself refuses lone surrogates, non-finite numbers and bad UTF-8; the other checks are a byte search each. Only
a body that fails one of them is read again by the standard library and walked, to name each field at fault.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator, Mapping
from itertools import accumulate
from typing import Any

import orjson
from django.conf import settings
from rest_framework.parsers import JSONParser

from core.api.errors import InvalidInput, Malformed
from core.api.validation import INT_MAX, INT_MIN, INT_RANGE
from core.infra.conf import rebound

MAX_PROBLEMS = 20  # fields named in one answer; the rest are found once these are fixed

NUL_IN_TEXT = "a NUL character (\\u0000) is not allowed in text"
NUL_IN_KEY = "a NUL character (\\u0000) is not allowed in a key"
SURROGATE_IN_TEXT = "a lone surrogate (\\ud800 to \\udfff) is not text UTF-8 can hold"
SURROGATE_IN_KEY = "a lone surrogate (\\ud800 to \\udfff) is not allowed in a key"

# orjson reads an integer beyond 64 bits as a float, silently losing digits; such an integer has 19 digits or
# more in a row, so a body with such a run (in a number or a string) is read by the standard library, exactly.
_DIGITS = bytes.maketrans(b"123456789", b"000000000")
_LONG_NUMBER = b"0" * 19
_NUL_ESCAPE = b"\\u0000"  # the only way a NUL reaches a JSON string: raw control characters are not JSON
_NOT_STRUCTURE = bytes(b for b in range(256) if b not in b'"[]{}')  # what the depth scan drops
_STEP = [0] * 256
_STEP[ord("[")] = _STEP[ord("{")] = 1
_STEP[ord("]")] = _STEP[ord("}")] = -1
_SURROGATE = re.compile("[\ud800-\udfff]")
_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]*")


class StrictJSONParser(JSONParser):
    def parse(
        self, stream: Any, media_type: str | None = None, parser_context: Mapping[str, Any] | None = None
    ) -> Any:
        raw = stream.read() if stream is not None else b""
        return loads(raw, encoding=_encoding(parser_context or {}))


def _encoding(parser_context: Mapping[str, Any]) -> str:
    """The charset the request's Content-Type names (UTF-8 unless it says), if it is a text encoding: a bytes
    codec such as bz2_codec would decompress the body after its size was checked."""
    encoding = str(parser_context.get("encoding") or settings.DEFAULT_CHARSET)
    try:
        "".encode(encoding)
    except (LookupError, UnicodeError):
        raise Malformed.of_body(
            f'Unsupported charset "{encoding[:40]}" in the Content-Type header.'
        ) from None
    return encoding


def loads(raw: bytes, *, encoding: str = "utf-8") -> Any:
    """The JSON document in `raw`, or InvalidInput naming each field that cannot be kept (Malformed for a body
    that is not JSON at all)."""
    raw = _as_utf8(raw, encoding)
    _check_depth(raw, int(rebound("API_MAX_JSON_DEPTH")))
    if _LONG_NUMBER not in raw.translate(_DIGITS):
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass  # the standard library reads it and the walk names the field, or it says why it is not JSON
        else:
            if b"\\" in raw and _NUL_ESCAPE in raw:  # most bodies have no backslash: one memchr
                _refuse(_problems(data))
            return data
    data = _stdlib_loads(raw)
    _refuse(_problems(data))
    return data


# --- the body as a whole ---------------------------------------------------------------------------------------


def _as_utf8(raw: bytes, encoding: str) -> bytes:
    """UTF-8 bytes: a body in another charset (named in its Content-Type) is decoded and encoded again."""
    if encoding.lower().replace("_", "-") in ("utf-8", "utf8"):
        return raw
    try:
        return raw.decode(encoding).encode("utf-8")
    except UnicodeError as error:
        raise Malformed(f"The body is not valid {encoding}: {error}", field="body") from None


def _check_depth(raw: bytes, limit: int) -> None:
    """Refuse nesting deeper than `limit` before any parser recurses into it: byte-level passes only (about a
    third of orjson's own time on a 100 KB batch), no Python loop over the body."""
    brackets = _brackets_outside_strings(raw)
    if len(brackets) <= limit or (limit >= 16 and _at_most_16_deep(brackets)):
        return
    depth = _deepest(brackets)
    if depth > limit:
        raise Malformed.of_body(
            f"The body is nested {depth} levels deep; at most {limit} are allowed.",
            f"it is nested {depth} levels deep; at most {limit}",
        )


def max_depth(raw: bytes) -> int:
    """How deep the arrays and objects of a JSON text nest; brackets inside strings do not count."""
    return _deepest(_brackets_outside_strings(raw))


def _brackets_outside_strings(raw: bytes) -> bytes:
    """The brackets of a JSON text that are not inside a string, in order.

    Escaped backslashes and then escaped quotes are dropped, so that every remaining quote opens or closes a
    string. Keeping only quotes and brackets, a string without brackets becomes `""`, and dropping every `""`
    leaves strings with brackets only (two neighbouring strings may merge, which keeps what is inside a string
    inside one); those are cut out by splitting on the quotes.
    """
    if b"\\" in raw:
        raw = raw.replace(b"\\\\", b"")
        raw = raw.replace(b'\\"', b"")
    structure = raw.translate(None, _NOT_STRUCTURE).replace(b'""', b"")
    if b'"' in structure:
        structure = b"".join(structure.split(b'"')[::2])
    return structure


def _at_most_16_deep(brackets: bytes) -> bool:
    """True when emptied by 8 passes of dropping empty pairs: each pass takes one level of arrays and one of
    objects, so what empties in 8 is at most 16 deep (most bodies are 2 to 4)."""
    for _ in range(8):
        brackets = brackets.replace(b"[]", b"").replace(b"{}", b"")
        if not brackets:
            return True
    return False


def _deepest(brackets: bytes) -> int:
    return max(accumulate(map(_STEP.__getitem__, brackets)), default=0)


class _Refused:
    """What the standard library's reader puts where a number cannot be kept, for the walk to name it."""

    def __init__(self, message: str) -> None:
        self.message = message


def _constant(name: str) -> _Refused:
    return _Refused(f"{name} is not a number JSON allows")


def _float(text: str) -> float | _Refused:
    value = float(text)
    return value if math.isfinite(value) else _Refused(f"{text[:40]} is beyond the range of a double")


def _stdlib_loads(raw: bytes) -> Any:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise Malformed.of_body(
            f"The body is not valid UTF-8 (byte {error.start}).", f"not valid UTF-8 at byte {error.start}"
        ) from None
    try:
        return json.loads(text, parse_constant=_constant, parse_float=_float)
    except json.JSONDecodeError as error:
        raise Malformed(f"JSON parse error - {error}", field="body") from None
    except ValueError as error:  # an integer of more than 4,300 digits
        raise Malformed(f"JSON parse error - {error}", field="body") from None
    except RecursionError:  # not reached below the depth limit; kept so that no body can crash a worker
        raise Malformed("The body is nested too deeply.", field="body") from None


# --- each value --------------------------------------------------------------------------------------------------


def _refuse(problems: Iterator[dict[str, str]]) -> None:
    errors = []
    for problem in problems:
        errors.append(problem)
        if len(errors) == MAX_PROBLEMS:
            break
    if errors:
        summary = "; ".join(f"{e['field']}: {e['message']}" for e in errors[:5])
        raise InvalidInput(f"Invalid input: {summary}", errors=errors)


def _problems(data: Any) -> Iterator[dict[str, str]]:
    """Each value that cannot be kept, with its path (`errors[0].message`), in document order."""
    stack: list[tuple[Any, str]] = [(data, "")]
    while stack:
        value, path = stack.pop()
        if isinstance(value, str):
            message = text_problem(value)
            if message:
                yield {"field": path or "body", "message": message}
        elif isinstance(value, dict):
            children = []
            for key, item in value.items():
                child = _key_path(path, key)
                message = text_problem(key, NUL_IN_KEY, SURROGATE_IN_KEY)
                if message:
                    yield {"field": child, "message": message}
                children.append((item, child))
            stack.extend(reversed(children))
        elif isinstance(value, list):
            stack.extend((item, f"{path}[{index}]") for index, item in reversed(list(enumerate(value))))
        elif isinstance(value, _Refused):
            yield {"field": path or "body", "message": value.message}
        elif isinstance(value, int) and not isinstance(value, bool) and not INT_MIN <= value <= INT_MAX:
            yield {"field": path or "body", "message": INT_RANGE}


def text_problem(text: str, nul: str = NUL_IN_TEXT, surrogate: str = SURROGATE_IN_TEXT) -> str | None:
    """Why PostgreSQL cannot keep this text (a NUL; a lone surrogate, which is not UTF-8), or None."""
    if "\x00" in text:
        return nul
    if _SURROGATE.search(text):
        return surrogate
    return None


def _key_path(path: str, key: str) -> str:
    """`a.b` for a plain key; `a["we ird"]`, JSON-escaped (ASCII), for any other, so that a path never carries a
    character the answer could not hold."""
    if _PLAIN_KEY.fullmatch(key):
        return f"{path}.{key}" if path else key
    return f"{path}[{json.dumps(key)}]"
