"""What PostgreSQL (and the buffered intake's drain on its way there) can keep of an error report.

A report the intake answers 201 for must be written: the buffered intake answers before the database sees the
report, so anything the database would refuse has to be refused before the answer (the schemas use
`text_problem` and `context_problem`), or, for reports built inside Rebound from what a remote answered (an
outbound call's error, a task's exception), made storable instead (`clean_text`, `clean_context`): those are
not a client's input to refuse.

What PostgreSQL refuses, and so what is checked here:
- text (`text`, `varchar`, and every string in `jsonb`) cannot hold a NUL character (U+0000);
- no text can hold a lone surrogate (U+D800 to U+DFFF): it is not a character UTF-8 can encode;
- `jsonb` numbers must be finite (no NaN, no infinity), and integers are kept to a bigint's range, which every
  consumer of the JSON can read exactly;
- `jsonb` nests at most CONTEXT_MAX_DEPTH levels here: a report's context is a few keys, and every walk of it
  (this one, the drain's, PostgreSQL's parser) recurses.
"""

from __future__ import annotations

import math
import re
from typing import Any

from core.api import parsers
from core.api.validation import INT_MAX, INT_MIN, INT_RANGE

CONTEXT_MAX_DEPTH = 32  # the context object itself is level 1

NUL = "a NUL character (\\u0000) is not allowed"
SURROGATE = "a lone surrogate (\\ud800 to \\udfff) is not text UTF-8 can hold"
NOT_FINITE = "a number must be finite (no NaN or infinity)"
TOO_DEEP = f"nested more than {CONTEXT_MAX_DEPTH} levels deep"

_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
REPLACEMENT = "\ufffd"


def text_problem(text: str) -> str | None:
    """Why PostgreSQL cannot keep this text, or None (the parser's check, with this room's words)."""
    return parsers.text_problem(text, NUL, SURROGATE)


def context_problem(value: Any) -> str | None:
    """The first thing in a report's context PostgreSQL's jsonb cannot keep, as `path: why`, or None.

    On the intake's hot path (every error of a batch): plain values are checked in the loop, and the path is
    only built for a problem found."""
    found = _walk(value, 1)
    if found is None:
        return None
    steps, why = found
    path = "".join(f"[{step}]" if isinstance(step, int) else f".{step}" for step in reversed(steps))
    return _at(path.removeprefix("."), why)


def _walk(item: Any, depth: int) -> tuple[list[str | int], str] | None:
    """(the path to the problem, innermost step first; why), or None. Recursion is bounded by the depth."""
    kind = type(item)
    if kind is dict:
        if depth > CONTEXT_MAX_DEPTH:
            return [], TOO_DEEP
        for key, child in item.items():
            if isinstance(key, str) and _UNSTORABLE.search(key):
                return [key], f"key: {text_problem(key)}"
            found = _child(child, depth)
            if found is not None:
                found[0].append(key)
                return found
        return None
    if kind is list:
        if depth > CONTEXT_MAX_DEPTH:
            return [], TOO_DEEP
        for index, child in enumerate(item):
            found = _child(child, depth)
            if found is not None:
                found[0].append(index)
                return found
        return None
    why = _scalar_problem(item)
    return None if why is None else ([], why)


def _child(child: Any, depth: int) -> tuple[list[str | int], str] | None:
    kind = type(child)
    if kind is str:
        return ([], text_problem(child) or "") if _UNSTORABLE.search(child) else None
    if kind is bool or child is None:
        return None
    if kind is int:
        return None if INT_MIN <= child <= INT_MAX else ([], INT_RANGE)
    return _walk(child, depth + 1)


def _scalar_problem(item: Any) -> str | None:
    if isinstance(item, str):
        return text_problem(item)
    if isinstance(item, bool):
        return None
    if isinstance(item, int):
        return None if INT_MIN <= item <= INT_MAX else INT_RANGE
    if isinstance(item, float):
        return None if math.isfinite(item) else NOT_FINITE
    return None


def _at(path: str, why: str) -> str:
    # The path is the client's own keys: cut so that an answer stays small whatever they sent.
    return f"{path[:200]}: {why}" if path else why


def clean_text(text: str) -> str:
    """The text with each character PostgreSQL cannot keep replaced by U+FFFD."""
    return _UNSTORABLE.sub(REPLACEMENT, text) if _UNSTORABLE.search(text) else text


def clean_context(value: Any, depth: int = 1) -> Any:
    """A context PostgreSQL's jsonb can keep: bad text replaced, numbers it cannot keep written as strings,
    what is nested too deep written as its text."""
    if isinstance(value, dict | list) and depth > CONTEXT_MAX_DEPTH:
        return clean_text(str(value)[:2000])
    if isinstance(value, dict):
        return {clean_text(str(k)): clean_context(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean_context(v, depth + 1) for v in value]
    if isinstance(value, str):
        return clean_text(value)
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return value if _scalar_problem(value) is None else str(value)
    # Anything else (a datetime, an exception, an object) is kept as its text, as the buffer's JSON would.
    return clean_text(str(value))
