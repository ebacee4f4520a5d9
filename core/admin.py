"""The core app's admin pages, registered here in one visible place; the rooms' admin.py define them."""

from django.contrib import admin

from core.access.admin import AgentAdmin, ApiKeyAdmin
from core.access.models import Agent, ApiKey
from core.audit.admin import AuditEventAdmin
from core.audit.models import AuditEvent

admin.site.register(Agent, AgentAdmin)
admin.site.register(ApiKey, ApiKeyAdmin)
admin.site.register(AuditEvent, AuditEventAdmin)
