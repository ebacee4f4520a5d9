"""Rebound's own settings (settings.REBOUND), read at call time so that tests can override them."""

from typing import Any

from django.conf import settings


def rebound(name: str) -> Any:
    return settings.REBOUND[name]
