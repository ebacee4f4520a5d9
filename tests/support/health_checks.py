"""Health checks for tests of any room: made through the service, as the API and the admin make them."""

from __future__ import annotations

from typing import Any

from django.test import override_settings

from core.audit.services import Actor
from healing.checks import services
from healing.checks.models import HealthCheck
from tests.support.factories import rebound_settings


def allow(*hosts: str) -> Any:
    """OUTBOUND_ALLOWED_HOSTS for the block: the hosts (host or host:port) checks may reach."""
    return override_settings(REBOUND=rebound_settings(OUTBOUND_ALLOWED_HOSTS=list(hosts)))


def make_check(name: str = "api", **fields: Any) -> HealthCheck:
    """A check created as an operator creates one (validated, audited); heartbeat unless said otherwise."""
    data: dict[str, Any] = {"name": name, "service": "svc", "kind": "heartbeat", **fields}
    return services.create_check(data=data, actor=Actor(), reason="test")
