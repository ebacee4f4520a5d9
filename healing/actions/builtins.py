"""Rebound's own healing actions: a registry of functions, name -> fn(run) -> output (a JSON object).

Each built-in acts through the service of the room it heals (never its models), as the system on behalf of
the run, with a reason that names the run. An action that fails raises (ActionFailed, or the room's domain
error): the run fails with that text. The data migration healing/0005 creates their catalog rows; an action
whose `builtin` names no function here is refused when it is saved.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from celery import current_app

from core.audit.models import AuditEvent
from core.audit.services import Actor
from healing.actions.outputs import ActionFailed, stored
from recovery.breakers import services as breaker_services
from recovery.decisions import fallbacks
from recovery.degradation import selectors as degradation_selectors
from recovery.degradation import services as degradation_services
from recovery.degradation.models import GLOBAL_SCOPE
from recovery.errors import dead_letters
from recovery.retries import services as retry_services

if TYPE_CHECKING:
    from healing.actions.models import HealingRun

Builtin = Callable[["HealingRun"], dict[str, Any]]
REGISTRY: dict[str, Builtin] = {}
DEFAULT_REPLAY_LIMIT = 1000
# pool_restart's replies are awaited at most this long (or the action's timeout, if shorter).
BROADCAST_TIMEOUT_S = 5.0


def builtin(name: str) -> Callable[[Builtin], Builtin]:
    def register(fn: Builtin) -> Builtin:
        REGISTRY[name] = fn
        return fn

    return register


def known(name: str) -> bool:
    return name in REGISTRY


def names() -> list[str]:
    return sorted(REGISTRY)


def run(run: HealingRun) -> dict[str, Any]:
    fn = REGISTRY.get(run.action.builtin)
    if fn is None:
        raise ActionFailed(f"no built-in action is named {run.action.builtin!r}")
    return fn(run)


def _actor() -> Actor:
    return Actor(source=AuditEvent.Source.SYSTEM)


def _reason(run: HealingRun) -> str:
    return f"healing run {run.pk} ({run.action.name}), requested by {run.requested_by}: {run.reason}"


# --- the built-ins -----------------------------------------------------------------------------------------------


@builtin("reset_breaker")
def reset_breaker(run: HealingRun) -> dict[str, Any]:
    """Close the target's breaker and empty its window: traffic flows again at once."""
    answer = breaker_services.reset_breaker(run.service, reason=_reason(run), actor=_actor())
    return {"service": run.service, "breaker": answer}


@builtin("clear_degradation")
def clear_degradation(run: HealingRun) -> dict[str, Any]:
    """Clear an operator's forced degradation level of the target (or of the fleet, with `fleet: true`)."""
    scope = GLOBAL_SCOPE if run.parameters.get("fleet") else run.service
    before = degradation_selectors.scope_state(scope)
    degradation_services.clear(scope=scope, reason=_reason(run), actor=_actor())
    after = degradation_selectors.scope_state(scope)
    forced = before.state.forced_level if before.state is not None and before.forced_in_force else None
    return {
        "scope": scope,
        "forced_before": forced or None,
        "cleared": bool(forced),
        "level_before": before.view.level,
        "level_after": after.view.level,
    }


@builtin("flush_fallback_cache")
def flush_fallback_cache(run: HealingRun) -> dict[str, Any]:
    """Forget the cached last good results of the target's operations."""
    return {"service": run.service, "forgotten": fallbacks.flush_results(run.service)}


@builtin("replay_dead_letters")
def replay_dead_letters(run: HealingRun) -> dict[str, Any]:
    """Queue the intake's dead letters again (at most `limit`, oldest first); the next drain writes them."""
    limit = int(run.parameters.get("limit") or DEFAULT_REPLAY_LIMIT)
    ids = dead_letters.all_ids()
    replayed = dead_letters.replay(ids[:limit]) if ids else 0
    return {"dead_letters_before": len(ids), "replayed": replayed, "left": len(ids) - replayed}


@builtin("requeue_stuck_retries")
def requeue_stuck_retries(run: HealingRun) -> dict[str, Any]:
    """Send again the target's due retry attempts that no worker took up (and settle lost ones)."""
    return {"service": run.service, "requeued": retry_services.requeue_stuck(run.service)}


@builtin("restart_worker_pool")
def restart_worker_pool(run: HealingRun) -> dict[str, Any]:
    """Celery's pool_restart broadcast: each worker replaces its pool's processes once they finish their task
    (CELERY_WORKER_POOL_RESTARTS must be on). `destination`: only these workers (by name)."""
    destination = run.parameters.get("destination") or None
    timeout = min(float(run.action.timeout_s), BROADCAST_TIMEOUT_S)
    replies = current_app.control.broadcast(
        "pool_restart", arguments={"reload": False}, destination=destination, reply=True, timeout=timeout
    )
    output = {"destination": destination, "replies": stored(replies or [])}
    if not replies:
        raise ActionFailed(f"no worker answered pool_restart within {timeout:g} s", output)
    refused = [reply for reply in replies for answer in reply.values() if "error" in (answer or {})]
    if refused:
        raise ActionFailed(f"{len(refused)} of {len(replies)} workers refused pool_restart", output)
    return output
