"""The audit trail's API shapes."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from core.api.schemas import Moment

Label = Annotated[str, StringConstraints(max_length=100)]


class AuditFilter(BaseModel):
    """The query of GET /audit-events (`page` and `page_size` belong to the paginator)."""

    model_config = ConfigDict(extra="ignore")

    action: Label | None = Field(default=None, description="e.g. `rule.create`, `breaker.override`")
    target_type: Label | None = Field(default=None, description="e.g. `recovery.service`")
    target_id: Label | None = None
    since: Moment | None = Field(default=None, description="Only events since then (ISO 8601).")


class AuditEventOut(BaseModel):
    """Who did what to which object, when and why."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    occurred_at: datetime
    actor_label: str = Field(description="`user:<name>`, `agent:<name>` or `system`.")
    action: str
    target_type: str
    target_id: str
    target_repr: str
    reason: str
    before: dict[str, Any] | None = Field(description="The fields the action changed, before it.")
    after: dict[str, Any] | None = Field(description="The same fields after it.")
    source: str = Field(description="api, admin, cli or system")
    request_id: str
