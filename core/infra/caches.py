"""The per-process caches (verified keys, rules, service configs, stores): each app registers how to drop
its own in AppConfig.ready(), and one call drops them all, as a test or a fresh deployment needs."""

from __future__ import annotations

from collections.abc import Callable

_resets: list[Callable[[], None]] = []


def register(*resets: Callable[[], None]) -> None:
    for reset in resets:
        if reset not in _resets:
            _resets.append(reset)


def reset_all() -> None:
    for reset in _resets:
        reset()
