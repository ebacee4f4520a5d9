"""The access API's shapes."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class MeOut(BaseModel):
    """Who this key or session is, and what it may do."""

    kind: Literal["agent", "user"]
    name: str = Field(description="The agent's name, or the user's username.")
    operator: bool = Field(description="Whether it may act as an operator (never for an agent key).")
