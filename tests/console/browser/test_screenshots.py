"""The README's screenshots of the console (docs/img/console-fleet.png, docs/img/console-queue.png), taken at
1280x800 in real Chromium from demo-like data: several services with an hour of traffic, one breaker tripped
open by failures, one forced open by an operator, a forced degradation, failing and passing health checks,
escalations of every level and healing runs waiting for approval. Both pages must fit the window's width."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone
from playwright.sync_api import Page, expect

from core.audit.services import Actor
from healing.actions import services as actions
from recovery.breakers import services as breakers
from recovery.breakers import traffic
from recovery.degradation import services as degradation
from tests.support import factories
from tests.support.browser import Api
from tests.support.escalations import raise_one
from tests.support.healing_runs import agent_actor, health_check, make_webhook
from tests.support.http_target import Target
from tests.support.processes import ROOT
from tests.support.sdk_server import service

pytestmark = [
    pytest.mark.slow,
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.django_db(transaction=True),
]

IMAGES = ROOT / "docs" / "img"
# name: (calls per minute, share of failures) over the last hour
FLEET = {
    "payments-api": (40, 0.05),
    "search-api": (120, 0.01),
    "openai": (60, 0.08),
    "github-mcp": (25, 0.02),
    "checkout": (35, 0.0),
    "email-sender": (8, 0.0),
    "vector-db": (90, 0.003),
    "web-search": (50, 0.02),
}


def an_hour_of_traffic(seed: int = 14) -> None:
    """Sixty past minutes of calls and failures per service, written to the traffic store as outcomes leave them
    (the sparklines read these counters)."""
    rng = random.Random(seed)
    store = traffic.store()
    minute = int(time.time() // 60)
    for name, (rate, failing) in FLEET.items():
        for back in range(1, 61):
            calls = max(1, int(rate * rng.uniform(0.6, 1.4)))
            spike = 4 if name == "payments-api" and back < 12 else 1  # it has been getting worse
            failures = min(calls, int(calls * failing * spike * rng.uniform(0.5, 1.5)))
            store.add({name: (calls, failures)}, minute - back)


def demo_fleet(api: Api, target: Target) -> None:
    for name in FLEET:
        service(name, criticality="essential" if name in ("payments-api", "checkout") else "non_critical")
    an_hour_of_traffic()
    # payments-api trips on failures an agent reports, each with its error (patterns for the fleet's column).
    error = {
        "type": "UpstreamError",
        "status_code": 502,
        "message": "card processor answered 502 Bad Gateway",
    }
    api.post("/api/v1/outcomes", [{"service": "payments-api", "success": False, "error": error}] * 3)
    api.post(
        "/api/v1/outcomes",
        [{"service": "openai", "success": False, "error": {"type": "RateLimitError", "status_code": 429}}],
    )
    healthy = [n for n in FLEET if n != "payments-api"]
    api.post("/api/v1/outcomes", [{"service": n, "success": True} for n in healthy for _ in range(3)])
    operator = factories.operator(username="maria")
    breakers.set_override(
        name="search-api",
        mode="forced_open",
        reason="provider incident INC-4521: index rebuild",
        expires_at=timezone.now() + timedelta(hours=2),
        actor=Actor(user=operator),
    )
    degradation.force(
        scope="openai",
        level="degraded",
        reason="quota at 90%: cheaper model only",
        expires_at=timezone.now() + timedelta(minutes=45),
        actor=Actor(user=operator),
    )
    health_check("payments-http", service="payments-api", state="unhealthy")
    health_check("search-http", service="search-api", state="healthy")
    health_check("vector-db-tcp", service="vector-db", state="healthy")
    health_check("checkout-http", service="checkout", state="healthy")
    escalations = [  # level, trigger, service, title, occurrences
        ("emergency", "critical_error", "payments-api", "Payments failing for every region", 41),
        ("critical", "breaker_open_too_long", "payments-api", "Breaker open: card processor answers 502", 12),
        ("critical", "repeated_pattern", "openai", "RateLimitError 429 seven times in 10 minutes", 7),
        ("warning", "error_rate", "web-search", "Error rate above 5% over 15 minutes", 3),
        ("info", "agent", "vector-db", "Index rebuild finished with warnings", 1),
    ]
    for number, (level, trigger, name, title, occurrences) in enumerate(escalations):
        raise_one(
            f"demo:{number}", level=level, trigger=trigger, service=name, title=title, occurrences=occurrences
        )
    make_webhook(target, name="restart-pods", risk="medium")
    make_webhook(target, name="failover-region", risk="high")
    for action, name, parameters in [
        ("restart-pods", "payments-api", {"replicas": 3}),
        ("failover-region", "payments-api", {}),
    ]:
        actions.request_run(
            action=action,
            service=name,
            parameters=parameters,
            reason="breaker open for 5 minutes",
            trigger="agent",
            actor=agent_actor(),
        )


def shoot(page: Page, path: str, name: str, *, full_page: bool = False) -> None:
    """The page in a 1280x800 window (the whole page's height with `full_page`); it must not scroll sideways."""
    page.goto(path)
    page.wait_for_load_state("networkidle")
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 1280, f"{path} scrolls sideways at 1280 px ({width} px wide)"
    IMAGES.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(IMAGES / name), full_page=full_page)


def test_it_takes_the_readme_screenshots_of_the_fleet_and_the_queue(
    sign_in: Callable[[Any], Page], agent_api: Api, loopback: Target
) -> None:
    demo_fleet(agent_api, loopback)
    page = sign_in(factories.operator(username="alex"))
    expect(page.locator('tr[data-service="payments-api"]')).to_have_attribute("data-breaker", "open")
    expect(page.locator("#forced-banner")).to_contain_text("search-api")

    shoot(page, "/console/", "console-fleet.png")
    # The queue's approvals come after its escalations, below the window's fold: the whole page, 1280 wide.
    shoot(page, "/console/queue/", "console-queue.png", full_page=True)

    assert (IMAGES / "console-fleet.png").stat().st_size > 10_000
    assert (IMAGES / "console-queue.png").stat().st_size > 10_000
