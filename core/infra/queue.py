"""Sending Celery tasks by name. A room's services enqueue the room's tasks without importing tasks.py, which
imports the services: the task names are the contract (each tasks.py declares its names explicitly)."""

from __future__ import annotations

from typing import Any

from celery import current_app


def send(
    name: str, *, args: list[Any] | None = None, task_id: str | None = None, countdown: float | None = None
) -> None:
    """Publish one message for the task `name`. Raises what the broker raises: callers decide whether a lost
    message matters (each has a periodic sweep that finds the work again)."""
    current_app.send_task(name, args=args or [], task_id=task_id, countdown=countdown)
