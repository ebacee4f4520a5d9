"""Driving the admin in tests as a browser does: a logged-in client, admin URLs, and actions posted the way the
changelist posts them (with `index`) and the way the reason page posts them back (with the reason)."""

from __future__ import annotations

from typing import Any

from django.test import Client
from django.urls import reverse

from core.admin_helpers import CONFIRMED


def login(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    client.user = user  # type: ignore[attr-defined]
    return client


def url(name: str, *args: Any) -> str:
    """An admin URL by name without its "admin:" prefix, e.g. url("recovery_service_change", pk)."""
    return reverse(f"admin:{name}", args=args)


def run_action(client: Client, changelist: str, action: str, pks: list[Any], **extra: str) -> Any:
    """POST an admin action as the changelist does (with `index`), or as the reason page does (without)."""
    data = {"action": action, "_selected_action": [str(pk) for pk in pks], **extra}
    if CONFIRMED not in extra:
        data["index"] = "0"
    return client.post(url(changelist), data)


def confirmed(reason: str, **extra: str) -> dict[str, str]:
    """What the reason page posts back."""
    return {CONFIRMED: "yes", "reason": reason, **extra}
