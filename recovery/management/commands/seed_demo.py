"""Demo data for the embedded mode: an admin, an operator, a reviewer and a viewer, a few agents and a stream of
errors (which raise the escalations their triggers call for)."""

from __future__ import annotations

import random
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand, CommandParser

from core.access import services as access
from core.access.models import Agent
from core.access.roles import OPERATORS, REVIEWERS, VIEWERS
from core.audit.models import AuditEvent
from core.audit.services import Actor
from recovery.breakers import services as breaker_services
from recovery.breakers.models import Service
from recovery.decisions import fallbacks
from recovery.decisions.models import FallbackOption, Operation
from recovery.errors import services as error_services
from recovery.errors.classification import ErrorReport

AGENTS = [
    ("research-agent", "Reads the web and summarises sources."),
    ("billing-agent", "Reconciles invoices against the ledger."),
    ("triage-agent", "Labels incoming support tickets."),
]

SERVICES = [
    (
        "openai",
        Service.Kind.MODEL_PROVIDER,
        Service.Criticality.ESSENTIAL,
        "Chat completions for every agent.",
    ),
    ("github-mcp", Service.Kind.MCP_SERVER, Service.Criticality.NON_CRITICAL, "Issues and pull requests."),
    ("postgres-ledger", Service.Kind.DATABASE, Service.Criticality.ESSENTIAL, "The accounting ledger."),
    ("stripe", Service.Kind.HTTP_API, Service.Criticality.ESSENTIAL, "Invoices and payments."),
    ("web-search", Service.Kind.TOOL, Service.Criticality.NON_CRITICAL, "Search for the research agent."),
    (
        "anthropic",
        Service.Kind.MODEL_PROVIDER,
        Service.Criticality.NON_CRITICAL,
        "The second model provider.",
    ),
]

# (service, operation, idempotent, critical, description)
OPERATIONS = [
    ("openai", "chat.completions", True, True, "A chat completion."),
    ("stripe", "invoices.create", False, True, "Creates an invoice: retried only with an idempotency key."),
    ("web-search", "query", True, False, "Search results enrich a summary; the summary can do without."),
]

# (service, operation, position, kind, extra fields)
FALLBACKS: list[tuple[str, str, int, str, dict[str, Any]]] = [
    ("openai", "chat.completions", 1, "service", {"target": "anthropic", "target_operation": "messages"}),
    ("openai", "chat.completions", 2, "cache", {"max_age_s": 3600}),
    ("web-search", "", 1, "cache", {"max_age_s": 86400}),
    ("web-search", "", 2, "skip", {"warning": "Search is unavailable: the summary uses no fresh sources."}),
    ("github-mcp", "", 1, "static", {"static_value": {"issues": [], "note": "GitHub is unavailable."}}),
]

ERRORS = [
    ErrorReport(
        service="openai",
        operation="chat.completions",
        type_name="RateLimitError",
        message="Rate limit reached for gpt-4o in organization org-7 on tokens per min",
        status_code=429,
        retry_after_s=20,
    ),
    ErrorReport(
        service="github-mcp",
        operation="search_issues",
        type_name="httpx.ConnectTimeout",
        message="timed out after 10.0 seconds",
    ),
    ErrorReport(
        service="postgres-ledger",
        operation="post_entry",
        type_name="psycopg.errors.DeadlockDetected",
        message="deadlock detected: process 4412 waits for ShareLock on transaction 99812",
    ),
    ErrorReport(service="stripe", operation="invoices.list", status_code=503, message="Service Unavailable"),
    ErrorReport(
        service="stripe",
        operation="invoices.list",
        status_code=401,
        type_name="AuthenticationError",
        message="Invalid API Key provided: sk_live_****1234",
    ),
    ErrorReport(
        service="web-search",
        operation="query",
        type_name="ValueError",
        message="query must be at most 400 characters, got 812",
    ),
    ErrorReport(
        service="openai",
        operation="chat.completions",
        type_name="BadRequestError",
        message="This model's maximum context length is 128000 tokens",
    ),
]


class Command(BaseCommand):
    help = "Create demo users, agents and errors (idempotent for users and agents)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--admin-password", default="rebound-admin")
        parser.add_argument("--errors", type=int, default=60)

    def handle(self, *args: object, admin_password: str, errors: int, **options: object) -> None:
        users = get_user_model()
        if not users.objects.filter(username="admin").exists():
            users.objects.create_superuser("admin", "admin@example.com", admin_password)
        for username, group in (("operator", OPERATORS), ("reviewer", REVIEWERS), ("viewer", VIEWERS)):
            user, created = users.objects.get_or_create(username=username, defaults={"is_staff": True})
            if created:
                user.set_password(admin_password)
                user.save()
            user.groups.add(Group.objects.get(name=group))
        actor = Actor(source=AuditEvent.Source.CLI)
        for name, kind, criticality, description in SERVICES:
            if not Service.objects.filter(name=name).exists():
                breaker_services.create_service(
                    data={"name": name, "kind": kind, "criticality": criticality, "description": description},
                    actor=actor,
                    reason="demo data",
                )
        _seed_recovery(actor)
        agents = []
        for name, description in AGENTS:
            agent = Agent.objects.filter(name=name).first()
            agents.append(agent or access.create_agent(name=name, description=description, actor=actor))
        rng = random.Random(7)
        for _ in range(errors):
            error_services.record_errors([rng.choice(ERRORS)], agent=rng.choice(agents))
        self.stdout.write(
            f"Demo data: users admin/operator/reviewer/viewer, {len(SERVICES)} services, {len(agents)} agents, {errors} errors."
        )


def _seed_recovery(actor: Actor) -> None:
    """Operations and fallback chains, so the planner has something to choose from in the demo."""
    by_name = {s.name: s for s in Service.objects.all()}
    for service, name, idempotent, critical, description in OPERATIONS:
        if not Operation.objects.filter(service=by_name[service], name=name).exists():
            op = Operation(
                service=by_name[service],
                name=name,
                idempotent=idempotent,
                critical=critical,
                description=description,
            )
            fallbacks.save_operation(op, actor=actor, reason="demo data")
    for service, operation, position, kind, extra in FALLBACKS:
        if FallbackOption.objects.filter(
            service=by_name[service], operation=operation, position=position
        ).exists():
            continue
        target = extra.pop("target", None)
        option = FallbackOption(
            service=by_name[service],
            operation=operation,
            position=position,
            kind=kind,
            target_service=by_name[target] if target else None,
            **extra,
        )
        fallbacks.save_option(option, actor=actor, reason="demo data")
