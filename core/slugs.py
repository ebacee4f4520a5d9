from __future__ import annotations

from typing import Annotated

from django.core.validators import RegexValidator
from pydantic import (
    StringConstraints,
)

validate_slug = RegexValidator(
    r"^[a-z0-9][a-z0-9_.:-]{0,99}$", "a lower-case slug: letters, digits and . _ : - (at most 100)"
)


SLUG = r"^[a-z0-9][a-z0-9_.:-]{0,99}$"
Slug = Annotated[str, StringConstraints(pattern=SLUG, max_length=100)]
