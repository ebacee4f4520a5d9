"""The healing app's admin pages: each room's admin.py registers its own; Django finds them through here."""

from healing.actions import admin as action_admin
from healing.checks import admin as check_admin
from healing.escalations import admin as escalation_admin
from healing.notifications import admin as notification_admin
from healing.remediation import admin as remediation_admin

__all__ = ["action_admin", "check_admin", "escalation_admin", "notification_admin", "remediation_admin"]
