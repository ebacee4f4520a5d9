"""The one definition of a slug, the name of services, operations and agents' things: for models (a
validator), for pydantic input (a type), and for a name in a route (a check)."""

from __future__ import annotations

import re
from typing import Annotated

from django.core.validators import RegexValidator
from pydantic import StringConstraints

from core.api.errors import InvalidInput

SLUG = r"^[a-z0-9][a-z0-9_.:-]{0,99}$"
_SLUG = re.compile(SLUG)

validate_slug = RegexValidator(SLUG, "a lower-case slug: letters, digits and . _ : - (at most 100)")
Slug = Annotated[str, StringConstraints(pattern=SLUG, max_length=100)]


def service_slug(value: str) -> str:
    """A service named in a route: the name itself, or a 400 saying what a service's name must be."""
    if not _SLUG.match(value):
        raise InvalidInput("a service is a lower-case slug: letters, digits and . _ : -", field="service")
    return value
