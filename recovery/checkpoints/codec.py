"""The checkpoint codec: a state parsed exactly (orjson), stored as canonical JSON (sorted keys) compressed
with zlib, with its SHA-256 and size checked on every read. Writes and reads share it (docs/checkpoints.md)."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import zlib
from dataclasses import dataclass
from typing import Any

import orjson

from core.api.errors import Conflict, InvalidInput, PayloadTooLarge
from core.infra.conf import rebound
from recovery.checkpoints.models import Checkpoint

log = logging.getLogger(__name__)

ENCODING = "zlib"
# zlib level 1, by measurement (docs/checkpoints.md, "Storage"): on agents' JSON it stores about 23% of the
# canonical bytes in about a sixth of level 6's time (100 KB: 0.9 ms against 5 ms), for 4 points of ratio.
COMPRESSION_LEVEL = 1


class CheckpointCorrupt(Conflict):
    """A stored checkpoint whose bytes no longer match their SHA-256 or size (409, code checkpoint_corrupt)."""

    code = "checkpoint_corrupt"


# --- the codec ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Encoded:
    """A state ready to store: its canonical JSON (what the SHA-256 and the size are of), compressed."""

    canonical: bytes
    data: bytes
    sha256: str

    @property
    def size_bytes(self) -> int:
        return len(self.canonical)

    @property
    def stored_bytes(self) -> int:
        return len(self.data)


# The canonical form is orjson's with sorted keys (docs/checkpoints.md, "Integrity"): a tenth of the standard
# library's time for the same work. Dates, times and dataclasses, which orjson would write natively, are
# refused as the standard library refuses them: a state is JSON values.
_CANONICAL = orjson.OPT_SORT_KEYS | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS
# orjson reads an integer beyond 64 bits as a float, silently losing its digits. Such an integer has 19 digits
# or more in a row, so a body with such a run (an integer, or digits in a string) is parsed by the standard
# library, which is exact. Finding the run costs about 0.1 ms per 100 KB.
_DIGITS = bytes.maketrans(b"123456789", b"000000000")
_LONG_NUMBER = b"0" * 19


def parse_json(raw: bytes) -> Any:
    """A JSON document, parsed exactly: ValueError saying why if it is not JSON (NaN and Infinity are not, nor
    a number beyond a double's range). orjson, unless it cannot read the body exactly or at all; then the
    standard library (an integer beyond 64 bits; nesting deeper than 1,024; a byte-order mark or UTF-16)."""
    if _LONG_NUMBER not in raw.translate(_DIGITS):
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass  # the standard library reads it, or says why not
    try:
        return json.loads(raw, parse_constant=_not_json, parse_float=_finite)
    except RecursionError:
        raise ValueError("it is nested too deeply") from None


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:40]} is beyond a double's range")
    return value


def canonical_json(state: Any, *, parsed: bool = False) -> bytes:
    """Keys sorted, no spaces, UTF-8 (not \\u escapes): the same state always gives the same bytes.

    orjson's form. A state orjson cannot write (an integer beyond 64 bits, a non-string key, nesting deeper
    than 254, a float subclass) gets the standard library's form instead, the only one before orjson: what
    was storable stays storable, and the choice depends on the state alone. NaN and Infinity are refused.
    `parsed`: the state is what parse_json read, which holds no NaN or Infinity (both parsers refuse them), so
    the search for them (0.05 ms per 100 KB, and a walk of the whole state, 0.3 ms, when it holds a null) is
    skipped: an HTTP save pays it for nothing.
    """
    try:
        canonical = orjson.dumps(state, option=_CANONICAL)
    except TypeError:  # orjson.JSONEncodeError
        return _canonical_stdlib(state)
    # orjson writes NaN and Infinity as null: look for them only where a null could be one of them.
    if not parsed and b"null" in canonical and _non_finite(state):
        raise InvalidInput("The state is not storable JSON: NaN and Infinity are not JSON.", field="state")
    return canonical


def _canonical_stdlib(state: Any) -> bytes:
    try:
        text = json.dumps(state, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        return text.encode("utf-8")
    except (TypeError, ValueError) as error:  # NaN, Infinity, a lone surrogate, a non-JSON object
        raise InvalidInput(f"The state is not storable JSON: {error}", field="state") from None
    except RecursionError:
        raise InvalidInput(
            "The state is not storable JSON: it is nested too deeply.", field="state"
        ) from None


def _non_finite(state: Any) -> bool:
    """Whether the state holds a NaN or an Infinity (about 0.3 ms per 100 KB of JSON)."""
    pending = [state]
    while pending:
        value = pending.pop()
        if isinstance(value, float):
            if not math.isfinite(value):
                return True
        elif isinstance(value, dict):
            pending.extend(value.values())
        elif isinstance(value, list | tuple):
            pending.extend(value)
    return False


def encode(state: Any, *, parsed: bool = False) -> Encoded:
    """The state's canonical JSON, compressed, with its SHA-256. `parsed`: it came from parse_json (above)."""
    canonical = canonical_json(state, parsed=parsed)
    limit = int(rebound("CHECKPOINT_MAX_BYTES"))
    if len(canonical) > limit:
        raise PayloadTooLarge(
            f"The state is {len(canonical)} bytes as canonical JSON; the limit is {limit} bytes "
            "(CHECKPOINT_MAX_BYTES).",
            field="state",
        )
    return Encoded(
        canonical=canonical,
        data=zlib.compress(canonical, COMPRESSION_LEVEL),
        sha256=hashlib.sha256(canonical).hexdigest(),
    )


def decode(checkpoint: Checkpoint) -> bytes:
    """The checkpoint's canonical JSON, checked against its size and SHA-256; CheckpointCorrupt if it fails."""
    data = bytes(checkpoint.data)
    if checkpoint.encoding == ENCODING:
        inflater = zlib.decompressobj()
        try:
            # Never more than one byte past the recorded size: a damaged stream cannot balloon in memory.
            raw = inflater.decompress(data, checkpoint.size_bytes + 1)
        except zlib.error as error:
            raise _corrupt(checkpoint, f"its data cannot be decompressed ({error})") from None
        if not inflater.eof or inflater.unconsumed_tail:
            raise _corrupt(checkpoint, "its data is longer than its recorded size or truncated")
    elif checkpoint.encoding == "identity":
        raw = data
    else:
        raise _corrupt(checkpoint, f"its encoding {checkpoint.encoding!r} is unknown")
    if len(raw) != checkpoint.size_bytes:
        raise _corrupt(checkpoint, f"it holds {len(raw)} bytes, not the {checkpoint.size_bytes} recorded")
    digest = hashlib.sha256(raw).hexdigest()
    if digest != checkpoint.sha256:
        raise _corrupt(checkpoint, f"its SHA-256 is {digest}, not the {checkpoint.sha256} recorded")
    return raw


def _corrupt(checkpoint: Checkpoint, why: str) -> CheckpointCorrupt:
    log.error("checkpoint %s of task %s is corrupt: %s", checkpoint.seq, checkpoint.task_id, why)
    return CheckpointCorrupt(
        f"Checkpoint {checkpoint.seq} is corrupt: {why}. GET .../checkpoints/latest answers the newest intact "
        "one.",
        field="seq",
    )
