"""The decision core shared by the sync and the async client: the live view of the fleet's breakers, the
local decision before a call, the fail-safe breakers, and the bounded buffer of outcomes.

Nothing here does network I/O: the clients fetch, and hand what they got to `Core`. The hot path (a call on a
closed breaker) is one dict lookup before the call and one deque append after it; everything else (a permit
to ask for, a breaker open, Rebound unreachable) takes the slow path.
"""

from __future__ import annotations

import json
import logging
import math
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from rebound_client._breaker import OPEN, Config, LocalBreaker
from rebound_client._describe import counts_as, describe

log = logging.getLogger("rebound_client")

SLUG = re.compile(r"^[a-z0-9][a-z0-9_.:-]{0,99}$")
# States in which a call goes ahead without asking anyone: the automatic closed state, and two overrides.
ALLOWING = frozenset({"closed", "forced_closed", "disabled"})
ALLOW, REFUSE, ASK, LOCAL = "allow", "refuse", "ask", "local"


@dataclass
class Breaker:
    """What this process knows of one fleet breaker. Times are this process's time.monotonic() seconds."""

    service: str
    state: str = "closed"
    config: Config = field(default_factory=Config)
    open_until: float = 0.0  # while open: when trial calls may start (the server's answer decides then)
    hold_until: float = 0.0  # half-open with every trial permit taken: refuse locally until then
    override_until: float | None = None
    last_event_id: int = 0


@dataclass(frozen=True)
class Change:
    """A breaker's state as this process sees it changed: given to `on_change` listeners."""

    service: str
    old_state: str
    new_state: str
    source: str  # snapshot | event | outcome | permit | fail-safe
    event_id: int | None = None
    at: str | None = None  # the transition's time on the server, for events


@dataclass(frozen=True)
class Decision:
    kind: str  # allow | refuse | ask | local
    state: str = ""
    retry_after_s: float | None = None
    reason: str = ""


class Buffer:
    """Outcomes waiting to be sent, bounded: past `capacity` the oldest are dropped and counted.

    Producers append to the deque without a lock (an append is atomic); only the rare paths (past `flush_at`,
    over capacity, a batch given back after a failed send) take the lock, so that every outcome is either sent
    or counted as dropped exactly once.
    """

    def __init__(self, capacity: int, flush_at: int, wake: Callable[[], None]) -> None:
        self.items: deque[tuple[Any, ...]] = deque()
        self.capacity = capacity
        self.flush_at = flush_at
        # Producers call full() once the buffer holds this many: time to flush, or to drop the oldest.
        self.check_at = min(flush_at, capacity + 1)
        self.dropped = 0
        self.wake = wake
        self._lock = threading.Lock()

    def full(self) -> None:
        if len(self.items) > self.capacity:
            with self._lock:
                self._trim()
        if len(self.items) >= self.flush_at:
            self.wake()

    def _trim(self) -> None:
        items = self.items
        while len(items) > self.capacity:
            try:
                items.popleft()
            except IndexError:
                return
            self.dropped += 1

    def take(self, limit: int) -> list[tuple[Any, ...]]:
        batch: list[tuple[Any, ...]] = []
        pop = self.items.popleft
        while len(batch) < limit:
            try:
                batch.append(pop())
            except IndexError:
                break
        return batch

    def give_back(self, batch: list[tuple[Any, ...]]) -> None:
        """A batch that could not be sent goes back in front, older than everything queued since."""
        with self._lock:
            self.items.extendleft(reversed(batch))
            self._trim()

    def __len__(self) -> int:
        return len(self.items)


class CallState:
    """A guarded call's state when it took the slow path: a trial's permit, the local breaker that admitted it
    (fail-safe) with its local permit, the result to send for caching."""

    __slots__ = ("local", "permit_id", "result")

    def __init__(self, permit_id: str, local: tuple[LocalBreaker, str] | None) -> None:
        self.permit_id = permit_id
        self.local = local
        self.result: tuple[object] | None = None


class Core:
    """The view, the decisions and the buffer. Reads on the hot path take no lock; updates take `_lock`."""

    def __init__(self, *, capacity: int, flush_at: int, wake: Callable[[], None]) -> None:
        self.fast: dict[str, bool] = {}  # services a call may go ahead on now without asking anyone
        self.breakers: dict[str, Breaker] = {}
        self.local: dict[str, LocalBreaker] = {}
        self.connected = False
        self.last_event_id = 0
        self.offset_s = 0.0  # the server's wall clock minus ours
        self.buffer = Buffer(capacity, flush_at, wake)
        self.listeners: list[Callable[[Change], None]] = []
        self.names: set[str] = set()  # service names already checked
        self.rejected = 0  # outcomes the server refused as invalid (dropped, logged)
        self.sent = 0  # outcomes the server accepted
        self.in_flight = 0  # outcomes taken from the buffer by a flush that has not finished
        self.drops_told = 0  # dropped outcomes the server has been told of (with an accepted batch)
        self._lock = threading.RLock()

    # --- names -------------------------------------------------------------------------------------------

    def check_name(self, service: str) -> None:
        if service in self.names:
            return
        if not isinstance(service, str) or not SLUG.match(service):
            raise ValueError(
                f"a service is a lower-case slug (letters, digits and . _ : -, at most 100): {service!r}"
            )
        self.names.add(service)

    # --- decisions ---------------------------------------------------------------------------------------

    def decide(self, service: str, now: float | None = None) -> Decision:
        """The slow path: the service is not known to be callable without asking."""
        now = time.monotonic() if now is None else now
        breaker = self.breakers.get(service)
        if not self.connected:
            return self._fail_safe(service, breaker, now)
        if breaker is None:
            # A service the fleet has not seen yet: the server registers it closed on its first outcome.
            with self._lock:
                breaker = self.breakers.setdefault(service, Breaker(service))
                self._publish(breaker)
            return Decision(ALLOW, breaker.state)
        state = breaker.state
        if state in ("forced_open", "forced_closed", "disabled"):
            if breaker.override_until is not None and now >= breaker.override_until:
                return Decision(ASK, state)  # the override has expired: the server knows what is in force
            if state == "forced_open":
                left = breaker.override_until - now if breaker.override_until is not None else None
                return Decision(REFUSE, state, left, "forced open by an operator")
            return Decision(ALLOW, state)
        if state == "closed":
            return Decision(ALLOW, state)
        if state == OPEN and now < breaker.open_until:
            return Decision(REFUSE, state, breaker.open_until - now, "open")
        if state == "half_open" and now < breaker.hold_until:
            return Decision(
                REFUSE, state, breaker.hold_until - now, "half-open: every trial permit is in use"
            )
        if state in (OPEN, "half_open"):
            return Decision(ASK, state)
        return self._fail_safe(service, breaker, now)  # "unknown": the server cannot tell (its store is down)

    def _fail_safe(self, service: str, breaker: Breaker | None, now: float) -> Decision:
        if breaker is not None and breaker.state in ("forced_open", "forced_closed", "disabled"):
            expired = breaker.override_until is not None and now >= breaker.override_until
            if not expired:
                # The operator's last word stands while Rebound cannot be asked.
                if breaker.state == "forced_open":
                    left = breaker.override_until - now if breaker.override_until is not None else None
                    return Decision(REFUSE, breaker.state, left, "forced open by an operator (last known)")
                return Decision(ALLOW, breaker.state)
        return Decision(LOCAL)

    def local_breaker(self, service: str) -> LocalBreaker:
        local = self.local.get(service)
        if local is not None:
            return local
        with self._lock:
            local = self.local.get(service)
            if local is None:
                known = self.breakers.get(service)
                if known is None:
                    local = LocalBreaker(Config())
                else:
                    now = time.monotonic()
                    left = int(max(0.0, known.open_until - now) * 1000) if known.state == OPEN else 0
                    local = LocalBreaker.starting_from(known.config, known.state, left)
                self.local[service] = local
        return local

    def record_locally(
        self,
        service: str,
        local: LocalBreaker,
        error: dict[str, Any] | None,
        permit_id: str,
        duration_s: float,
    ) -> None:
        slow = bool(local.cfg.slow_ms and duration_s * 1000 >= local.cfg.slow_ms)
        result = local.record(counts_as(error, permit_id=permit_id, slow=slow))
        self._notify([Change(service, old, new, "fail-safe") for old, new, _ in result.transitions])

    def report(
        self,
        service: str,
        operation: str,
        plan_id: str | None,
        cache_key: str | None,
        slow: CallState | None,
        duration_s: float,
        error: Exception | None,
    ) -> None:
        """Queue an outcome that is not a plain success of the hot path (a failure, a trial, a plan's, a result
        to cache, a call the local breaker admitted)."""
        described = describe(error) if error is not None else None
        permit_id, cache = "", None
        if slow is not None:
            permit_id = slow.permit_id
            if slow.local is not None:
                local, local_permit = slow.local
                self.record_locally(service, local, described, local_permit, duration_s)
            if error is None and cache_key is not None and slow.result is not None:
                cache = (cache_key, slow.result[0])
        items = self.buffer.items
        if described is None and not permit_id and not plan_id and cache is None:
            items.append((service, operation, duration_s))
        else:
            items.append(
                (service, operation, duration_s, error is None, described, permit_id, plan_id or "", cache)
            )
        if len(items) >= self.buffer.check_at:
            self.buffer.full()

    # --- connection --------------------------------------------------------------------------------------

    def disconnect(self) -> None:
        """Rebound cannot be reached: every call takes the slow path, where the local breakers decide."""
        with self._lock:
            if not self.connected:
                return
            self.connected = False
            self.fast.clear()
            self.local.clear()  # each starts afresh from the last known state when first needed
        log.warning("rebound_client: Rebound is unreachable; local fail-safe breakers decide")

    # --- applying what the server said -------------------------------------------------------------------

    def to_monotonic(self, value: object, now_mono: float, now_wall: float) -> float | None:
        """A server timestamp (ISO 8601) as this process's monotonic time, allowing for the clocks' offset."""
        when = _timestamp(value)
        return None if when is None else now_mono + (when - self.offset_s - now_wall)

    def apply_snapshot(self, data: Mapping[str, Any], sent_wall: float, received_wall: float) -> None:
        server_time = _timestamp(data.get("server_time"))
        if server_time is not None:
            self.offset_s = server_time - (sent_wall + received_wall) / 2
        now_mono, now_wall = time.monotonic(), time.time()
        changes: list[Change] = []
        with self._lock:
            for item in data.get("breakers") or []:
                if not isinstance(item, Mapping) or not item.get("service"):
                    continue
                breaker = self._from_view(item, now_mono, now_wall)
                old = self.breakers.get(breaker.service)
                self.breakers[breaker.service] = breaker
                if old is None or old.state != breaker.state:
                    changes.append(
                        Change(breaker.service, old.state if old else "", breaker.state, "snapshot")
                    )
            last = data.get("last_event_id")
            if isinstance(last, int):
                self.last_event_id = last
                for breaker in self.breakers.values():
                    breaker.last_event_id = max(breaker.last_event_id, last)
            self.local.clear()
            self.connected = True
            for breaker in self.breakers.values():
                self._publish(breaker)
        self._notify(changes)

    def apply_detail(self, item: Mapping[str, Any]) -> None:
        """One breaker as `GET /api/v1/breakers/{service}` shows it (exact open_until and override expiry)."""
        now_mono, now_wall = time.monotonic(), time.time()
        with self._lock:
            fresh = self._from_view(item, now_mono, now_wall)
            old = self.breakers.get(fresh.service)
            if old is not None:
                fresh.last_event_id = old.last_event_id
            self.breakers[fresh.service] = fresh
            self._publish(fresh)
        if old is not None and old.state != fresh.state:
            self._notify([Change(fresh.service, old.state, fresh.state, "snapshot")])

    def _from_view(self, item: Mapping[str, Any], now_mono: float, now_wall: float) -> Breaker:
        override = item.get("override") or {}
        return Breaker(
            service=str(item["service"]),
            state=str(item.get("state") or "closed"),
            config=Config.from_settings(item.get("settings")),
            open_until=self.to_monotonic(item.get("open_until"), now_mono, now_wall) or 0.0,
            override_until=self.to_monotonic(override.get("until"), now_mono, now_wall)
            if isinstance(override, Mapping)
            else None,
        )

    def apply_events(self, events: Iterable[Mapping[str, Any]], source: str = "event") -> set[str]:
        """Apply transitions in id order; returns the services whose details are worth fetching (an override:
        its expiry)."""
        now_mono, now_wall = time.monotonic(), time.time()
        changes: list[Change] = []
        details: set[str] = set()
        with self._lock:
            for event in events:
                event_id = event.get("id")
                service = event.get("service")
                if not isinstance(event_id, int) or not isinstance(service, str):
                    continue
                if source == "event":
                    self.last_event_id = max(self.last_event_id, event_id)
                breaker = self.breakers.get(service)
                if breaker is None:
                    breaker = self.breakers[service] = Breaker(service)
                if event_id <= breaker.last_event_id:
                    continue  # already applied (from an outcome's answer, or before the last snapshot)
                breaker.last_event_id = event_id
                old, new = breaker.state, str(event.get("to_state") or "")
                if not new:
                    continue
                breaker.state = new
                breaker.hold_until = 0.0
                if new == OPEN:
                    # The wait is at least the service's setting from the transition's time. A longer one (a
                    # Retry-After, a grown wait) is learnt from the first permit asked for after that, which
                    # refuses with the time left: no request here, when every client of the fleet hears of it.
                    at = self.to_monotonic(event.get("at"), now_mono, now_wall)
                    breaker.open_until = (now_mono if at is None else at) + breaker.config.wait_ms / 1000
                elif new in ("forced_open", "forced_closed", "disabled"):  # its expiry is in the details
                    breaker.override_until = None
                    details.add(service)
                else:
                    breaker.override_until = None
                self._publish(breaker)
                if old != new:
                    changes.append(Change(service, old, new, source, event_id, event.get("at")))
        self._notify(changes)
        return details

    def apply_outcome_answers(self, answers: Iterable[object]) -> set[str]:
        """The answers to a flush: each outcome that caused a transition carries it."""
        transitions = [
            a["transition"]
            for a in answers
            if isinstance(a, Mapping) and isinstance(a.get("transition"), Mapping)
        ]
        return self.apply_events(transitions, source="outcome") if transitions else set()

    def apply_permit(self, service: str, answer: Mapping[str, Any]) -> None:
        now = time.monotonic()
        state = str(answer.get("state") or "")
        retry = answer.get("retry_after_s")
        retry_s = float(retry) if isinstance(retry, int | float) else None
        changes: list[Change] = []
        with self._lock:
            breaker = self.breakers.get(service)
            if breaker is None:
                breaker = self.breakers[service] = Breaker(service)
            old = breaker.state
            if state == "unknown" or not state:
                return  # the server's own store is down: it answered by its fail mode, nothing to learn
            breaker.state = state
            if state == OPEN:
                breaker.open_until = now + (retry_s or 0.0)
            elif state == "half_open" and not answer.get("allowed") and retry_s:
                breaker.hold_until = now + retry_s
            elif state not in ("forced_open", "forced_closed", "disabled"):
                breaker.override_until = None
            self._publish(breaker)
            if old != state:
                changes.append(Change(service, old, state, "permit"))
        self._notify(changes)

    def _publish(self, breaker: Breaker) -> None:
        """Keep `fast` true to the view: the hot path reads it without a lock."""
        if self.connected and breaker.state in ALLOWING and breaker.override_until is None:
            self.fast[breaker.service] = True
        else:
            self.fast.pop(breaker.service, None)

    def _notify(self, changes: list[Change]) -> None:
        for change in changes:
            for listener in list(self.listeners):
                try:
                    listener(change)
                except Exception:  # a listener's bug must not stop the view
                    log.exception("rebound_client: an on_change listener failed")

    def state_of(self, service: str) -> str:
        """The state this process sees for a service (`closed` for one it has not heard of)."""
        if not self.connected:
            local = self.local.get(service)
            if local is not None:
                return local.current
        breaker = self.breakers.get(service)
        if breaker is None:
            return "closed"
        if breaker.state == OPEN and time.monotonic() >= breaker.open_until:
            return "half_open"  # what the next permit will find
        return breaker.state


def _timestamp(value: object) -> float | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


# --- outcomes as JSON ------------------------------------------------------------------------------------
# An outcome in the buffer is a tuple: (service, operation, duration_s) for a plain success (the hot path
# builds nothing else), or (service, operation, duration_s, success, error, permit_id, plan_id, cache) where
# cache is (key, result) or None.
#
# A batch is sent in the compact form of POST /api/v1/outcomes: the outcomes of each service in the order they
# happened, consecutive plain successes of one operation as one run item ({"service", "operation", "successes": k,
# "durations_ms": [...]}), any other outcome as itself. The server applies a run to the breaker at once, with
# the same result as its successes one by one, so one request carries tens of thousands of outcomes.

RUN_MAX = 20_000  # successes in one run item: its text (about 8 bytes a duration) stays well within a body
Body = tuple[bytes, list[tuple[Any, ...]], int]  # the request body, the outcomes in it, the drops it reports


class Encoder:
    """Outcome tuples to request bodies of at most `max_items` items (runs or outcomes) and about `max_bytes`
    bytes."""

    def __init__(self, max_items: int, max_bytes: int = 512 * 1024) -> None:
        self.max_items = max_items
        self.max_bytes = max_bytes
        self._heads: dict[tuple[str, str], str] = {}
        self._not_json: set[tuple[str, str]] = set()  # results not cached (not JSON), told once each
        # A server that does not know runs (older than this SDK) refused one: one outcome per item until then
        # (time.monotonic()), then runs are tried again (the server may have been upgraded meanwhile).
        self.plain_until = 0.0

    @property
    def compact(self) -> bool:
        return self.plain_until <= time.monotonic()

    def plain(self, item: tuple[Any, ...]) -> str:
        """One outcome as itself, a plain success too (for a server that does not know runs)."""
        if len(item) == 3:
            head = self._head(item[0], item[1]).removesuffix('"successes":')
            return f'{head}"success":true,"duration_ms":{_duration_ms(item[2]):.3f}}}'
        return self.one(item)

    def _head(self, service: str, operation: str) -> str:
        """A run item's text up to its count."""
        head = self._heads.get((service, operation))
        if head is None:
            if len(self._heads) > 10_000:
                self._heads.clear()
            text = json.dumps({"service": service, "operation": operation}, separators=(",", ":"))
            head = self._heads[(service, operation)] = text[:-1] + ',"successes":'
        return head

    def run(self, service: str, operation: str, durations: list[float]) -> str:
        """A run of plain successes, each duration in ms."""
        ms = ",".join(["%.3f" % (d * 1000) for d in durations])
        if "n" in ms or "-" in ms:  # nan, inf or a negative duration: never from perf_counter, but never sent
            ms = ",".join([f"{_duration_ms(d):.3f}" for d in durations])
        return f'{self._head(service, operation)}{len(durations)},"durations_ms":[{ms}]}}'

    def one(self, item: tuple[Any, ...]) -> str:
        duration_ms = _duration_ms(item[2])
        if len(item) == 3:
            return self.run(item[0], item[1], [item[2]])
        service, operation, _, success, error, permit_id, plan_id, cache = item
        body: dict[str, Any] = {
            "service": service,
            "operation": operation,
            "success": success,
            "duration_ms": round(duration_ms, 3),
        }
        if error is not None:
            body["error"] = error
        if permit_id:
            body["permit_id"] = permit_id
        if plan_id:
            body["plan_id"] = plan_id
        if cache is not None and success:
            try:
                json.dumps(cache[1])
            except (TypeError, ValueError) as error:
                # Not JSON: nothing to cache. Said once per service and operation (this runs per outcome).
                if (service, operation) not in self._not_json and len(self._not_json) < 10_000:
                    self._not_json.add((service, operation))
                    log.warning(
                        "rebound_client: the result of %s %s is not JSON, so it is not cached: %s",
                        service,
                        operation or "-",
                        error,
                    )
            else:
                body["cache_key"], body["result"] = cache
        return json.dumps(body, separators=(",", ":"), default=str)

    def parts(self, batch: list[tuple[Any, ...]]) -> list[tuple[str, list[tuple[Any, ...]]]]:
        """The items of a batch as text, each with the outcomes it carries: by service (first seen first), each
        service's in the order they happened, consecutive plain successes of one operation as one run."""
        if not self.compact:
            return [(self.plain(item), [item]) for item in batch]
        groups: dict[str, list[list[Any]]] = {}
        for item in batch:
            parts = groups.get(item[0])
            if parts is None:
                parts = groups[item[0]] = []
            if len(item) == 3:
                last = parts[-1] if parts else None
                # A run is [operation, durations, items]; any other outcome [None, None, [item]].
                if last is not None and last[0] == item[1] and len(last[2]) < RUN_MAX:
                    last[1].append(item[2])
                    last[2].append(item)
                    continue
                parts.append([item[1], [item[2]], [item]])
            else:
                parts.append([None, None, [item]])
        out = []
        for service, parts in groups.items():
            for operation, durations, items in parts:
                text = self.one(items[0]) if operation is None else self.run(service, operation, durations)
                out.append((text, items))
        return out

    def bodies(self, batch: list[tuple[Any, ...]], dropped: int = 0) -> list[Body]:
        """(request body, the outcomes in it, the drops it reports) for each request the batch needs; the first
        body reports `dropped`, the outcomes this client dropped and has not told the server of yet (a server that
        does not know runs does not know that either)."""
        dropped = dropped if self.compact else 0
        out: list[Body] = []
        texts: list[str] = []
        carried: list[tuple[Any, ...]] = []
        size = 0
        for text, items in self.parts(batch):
            if texts and (len(texts) >= self.max_items or size + len(text) + 1 > self.max_bytes):
                told = 0 if out else dropped
                out.append((_wrap(texts, told), carried, told))
                texts, carried, size = [], [], 0
            texts.append(text)
            carried.extend(items)
            size += len(text) + 1
        if texts:
            told = 0 if out else dropped
            out.append((_wrap(texts, told), carried, told))
        return out


def _duration_ms(seconds: float) -> float:
    duration_ms = seconds * 1000
    return duration_ms if math.isfinite(duration_ms) and duration_ms >= 0 else 0.0


def _wrap(parts: list[str], dropped: int = 0) -> bytes:
    tail = f',"dropped":{dropped}}}' if dropped else "}"
    return ('{"outcomes":[' + ",".join(parts) + "]" + tail).encode()
