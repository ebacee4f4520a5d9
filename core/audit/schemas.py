"""The audit trail's API shapes."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, WithJsonSchema

from core.api.schemas import Moment

Label = Annotated[str, StringConstraints(max_length=100)]

# The fields an action changed, as audit.snapshot() keeps them: each field's name and its value as JSON (a
# relation as its id, a date as ISO 8601 text; a value may itself be a list or an object). Said explicitly in
# the schema: a value of any JSON type, the object itself never anything but an object.
AuditFields = Annotated[
    dict[str, Any],
    WithJsonSchema(
        {
            "type": "object",
            "additionalProperties": {
                "type": ["string", "number", "boolean", "null", "array", "object"],
                "description": "The field's value as JSON: a relation as its id, a date and time in ISO 8601.",
            },
            "examples": [
                {"revoked_at": None},
                {"override": "forced_open", "override_reason": "provider incident"},
            ],
        }
    ),
]


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
    before: AuditFields | None = Field(
        description="The fields the action changed, by name, as they were before it; null when the object is new."
    )
    after: AuditFields | None = Field(
        description="The same fields after it; null when the action deleted the object."
    )
    source: str = Field(description="api, admin, cli or system")
    request_id: str
