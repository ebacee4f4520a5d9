"""The intake's dead-letter stream: entries the database refused for their content (recovery/errors/intake.py),
kept for a human. An operator lists and reads them, replays them into the intake once the cause is fixed, or
purges them (`manage.py intake_dead_letters`).

A dead letter's reports stay counted as pending in the answers' totals (they were accepted): a replay leaves
them so until the drain writes them, a purge takes them out.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from typing import Any

import redis

from core.infra import queue, redisconn
from recovery.errors import intake

PAGE = 100

# Move one dead letter back into the intake's stream, keeping the id it was first queued with (its events keep
# their intake keys, so an entry that had been written after all is not counted twice). Atomic: a dead letter
# is either still dead or queued again, never both nor neither.
# KEYS: dead-letter stream, intake stream. ARGV: the dead letter's id. Returns 1 if it was moved.
REPLAY = """
local found = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])
if #found == 0 then return 0 end
local fields = found[1][2]
local payload, origin, entry = '', nil, nil
for i = 1, #fields, 2 do
  if fields[i] == 'v' then payload = fields[i + 1]
  elseif fields[i] == 'k' then origin = fields[i + 1]
  elseif fields[i] == 'entry' then entry = fields[i + 1] end
end
redis.call('XADD', KEYS[2], '*', 'v', payload, 'k', origin or entry or ARGV[1])
redis.call('XDEL', KEYS[1], ARGV[1])
return 1
"""

# Delete one dead letter and take its reports out of the pending counts, atomically (a fingerprint with nothing
# pending left leaves the hash, as the drain's acknowledgement does). KEYS: dead-letter stream, pending.
# ARGV: the dead letter's id, then (fingerprint, count) pairs. Returns 1 if it was deleted.
PURGE = """
if redis.call('XDEL', KEYS[1], ARGV[1]) == 0 then return 0 end
for i = 2, #ARGV, 2 do
  if redis.call('HINCRBY', KEYS[2], ARGV[i], -tonumber(ARGV[i + 1])) <= 0 then
    redis.call('HDEL', KEYS[2], ARGV[i])
  end
end
return 1
"""


@dataclass(frozen=True)
class DeadLetter:
    id: str
    entry: str  # the id it had in the intake's stream when it was set aside
    error: str
    at: str
    payload: str

    @property
    def reports(self) -> int | None:
        """How many reports it holds, or None if its payload is not what the intake writes."""
        counts = _counts(self.payload)
        return None if counts is None else sum(counts.values())


def _text(fields: dict[bytes, bytes], name: bytes) -> str:
    return fields.get(name, b"").decode(errors="replace")


def _dead_letter(entry_id: bytes, fields: dict[bytes, bytes]) -> DeadLetter:
    return DeadLetter(
        id=entry_id.decode(),
        entry=_text(fields, b"entry"),
        error=_text(fields, b"error"),
        at=_text(fields, b"at"),
        payload=_text(fields, b"v"),
    )


def _counts(payload: str) -> Counter[str] | None:
    """fingerprint -> reports, as the intake counted them as pending when it queued the entry."""
    try:
        rows = json.loads(payload)["patterns"]
        return Counter({str(row[0]): int(row[11]) for row in rows})
    except (ValueError, KeyError, TypeError, IndexError):
        return None


def client() -> redis.Redis:
    return redisconn.client()


def count() -> int:
    reply: Any = client().xlen(intake.DEAD)
    return int(reply)


def oldest(limit: int = 50) -> list[DeadLetter]:
    found: Any = client().xrange(intake.DEAD, count=limit)
    return [_dead_letter(i, f) for i, f in found]


def get(dead_id: str) -> DeadLetter | None:
    found: Any = client().xrange(intake.DEAD, dead_id, dead_id)
    return _dead_letter(*found[0]) if found else None


def all_ids() -> list[str]:
    """Every dead letter's id, oldest first (read a page at a time)."""
    ids: list[str] = []
    start = "-"
    while True:
        page: Any = client().xrange(intake.DEAD, start, "+", count=PAGE)
        ids += [entry_id.decode() for entry_id, _ in page]
        if len(page) < PAGE:
            return ids
        start = "(" + page[-1][0].decode()


def replay(ids: list[str]) -> int:
    """Queue these dead letters again; the next drain writes them (or sets them aside again, if the database
    still refuses them). Returns how many were moved."""
    redis_client = client()
    moved = 0
    for dead_id in ids:
        reply: Any = redis_client.eval(REPLAY, 2, intake.DEAD, intake.STREAM, dead_id)
        moved += int(reply)
    if moved:
        queue.send(intake.DRAIN_TASK)
    intake.observe_dead_letters(redis_client)
    return moved


def purge(ids: list[str]) -> int:
    """Delete these dead letters, and their reports from the answers' pending totals. Returns how many went."""
    redis_client = client()
    purged = 0
    for dead_id in ids:
        letter = get(dead_id)
        if letter is None:
            continue
        counts = _counts(letter.payload) or Counter()
        args: list[Any] = [dead_id, *[value for pair in counts.items() for value in pair]]
        reply: Any = redis_client.eval(PURGE, 2, intake.DEAD, intake.PENDING, *args)
        purged += int(reply)
    intake.observe_dead_letters(redis_client)
    return purged
