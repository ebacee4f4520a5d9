"""Every model of the core app, in one visible place: the rooms' models.py define them."""

from core.access.models import Agent, ApiKey
from core.audit.models import AuditEvent

__all__ = ["Agent", "ApiKey", "AuditEvent"]
