"""Every model of the core app, in one visible place: the rooms' models.py define them."""

from core.access.models import Agent, ApiKey
from core.audit.models import AuditEvent
from core.schedule.models import PeriodicClaim

__all__ = ["Agent", "ApiKey", "AuditEvent", "PeriodicClaim"]
