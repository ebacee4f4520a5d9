"""A breaker's state as its history tells it: what the stores fall back on when the state they hold is gone or
unreadable (a Redis restart without persistence, an eviction, a value no reader can trust).

The transition rows are the record that agents were told (`why`, `/breakers/events`, the SDKs' live views), and
the service row holds the operator's override: a state rebuilt from them agrees with what everyone was told.
Only the live window and the half-open trial permits are lost, and both refill within a few calls.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from recovery.breakers import logic
from recovery.breakers.models import BreakerTransition, Service


def new_generation() -> str:
    """A fresh name for a state's generation: the seqs of its transitions can never repeat an earlier one's."""
    return uuid.uuid4().hex[:12]


def ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def _window_ms(window: object, key: str) -> int | None:
    """A time a transition's window recorded (ISO 8601), in ms; None if it has none that can be read."""
    if not isinstance(window, dict) or not isinstance(window.get(key), str):
        return None
    try:
        return ms(datetime.fromisoformat(window[key]))
    except (ValueError, OverflowError):
        return None


def state_from_history(service: Service, cfg: logic.Config, now: int) -> logic.State:
    """The state the breaker's last automatic transition left it in (open with its open-until, half-open, or
    closed) and the override in force, as a fresh generation."""
    state = logic.new_state(new_generation())
    last = (
        BreakerTransition.objects.filter(service_id=service.pk, to_state__in=logic.STATES)
        .order_by("-created_at", "-id")
        .only("to_state", "created_at", "window")
        .first()
    )
    if last is not None and last.to_state != logic.CLOSED:
        at = ms(last.created_at)
        window = last.window if isinstance(last.window, dict) else {}
        wait = window.get("wait_ms")
        wait_ms = int(wait) if isinstance(wait, int) and wait > 0 else cfg.wait_ms
        state["state"], state["opened_at"] = last.to_state, min(at, now)
        state["wait_ms"] = min(wait_ms, cfg.cap_ms)
        if last.to_state == logic.OPEN:
            # Rows written before open-until was recorded: their wait from when they opened.
            until = _window_ms(window, "open_until") or at + wait_ms
            state["open_until"] = min(until, now + cfg.cap_ms)
    row = (
        Service.objects.filter(pk=service.pk).values("override", "override_reason", "override_until").first()
    )
    if row is not None and row["override"] != logic.AUTO:
        until = ms(row["override_until"]) if row["override_until"] is not None else 0
        logic.set_override(state, row["override"], until, row["override_reason"])
    return state
