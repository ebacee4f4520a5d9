"""Who may do what. Operators act; reviewers work the escalation queue; viewers read; agents report and read;
superusers do everything."""

from __future__ import annotations

from typing import Any

OPERATORS = "operators"
VIEWERS = "viewers"
REVIEWERS = "reviewers"


def is_agent(user: Any) -> bool:
    return getattr(user, "is_agent", False)


def agent_of(user: Any) -> Any:
    """The Agent behind an agent key's principal, or None for humans."""
    return user.agent if is_agent(user) else None


def is_operator(user: Any) -> bool:
    if not getattr(user, "is_authenticated", False) or is_agent(user) or not user.is_active:
        return False
    if user.is_superuser:
        return True
    return _group_names(user) >= {OPERATORS}


def is_reviewer(user: Any) -> bool:
    """Works the escalation review queue: reviewers, and operators (who may do everything reviewers may)."""
    if not getattr(user, "is_authenticated", False) or is_agent(user) or not user.is_active:
        return False
    return user.is_superuser or bool(_group_names(user) & {OPERATORS, REVIEWERS})


def is_viewer(user: Any) -> bool:
    if not getattr(user, "is_authenticated", False) or is_agent(user) or not user.is_active:
        return False
    return user.is_superuser or bool(_group_names(user) & {OPERATORS, REVIEWERS, VIEWERS}) or user.is_staff


def _group_names(user: Any) -> set[str]:
    # Cached on the user object: a request asks several times, and a cached key's user lives a few seconds.
    cached = getattr(user, "_rebound_groups", None)
    if cached is None:
        cached = set(user.groups.values_list("name", flat=True))
        user._rebound_groups = cached
    return cached
