"""The Celery app. Tasks carry the request id of whoever enqueued them, so logs join up across processes."""

from __future__ import annotations

import os
from typing import Any

from celery import Celery
from celery.signals import before_task_publish, task_postrun, task_prerun

from core.infra import request_ids

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("rebound")
app.config_from_object("django.conf:settings", namespace="CELERY")
# Each room with Celery tasks keeps them in its tasks.py; the list is explicit so that a new room is seen here.
app.autodiscover_tasks(
    [
        "recovery.errors",
        "recovery.breakers",
        "recovery.calls",
        "recovery.decisions",
        "recovery.retries",
        "recovery.degradation",
        "recovery.checkpoints",
        "recovery.sagas",
    ]
)


@before_task_publish.connect
def _attach_request_id(headers: dict[str, Any] | None = None, **_: object) -> None:
    request_id = request_ids.get_request_id()
    if headers is not None and request_id and "request_id" not in headers:
        headers["request_id"] = request_id


@task_prerun.connect
def _adopt_request_id(task: Any = None, task_id: str = "", **_: object) -> None:
    request_id = getattr(task.request, "request_id", None) if task is not None else None
    request_ids.set_request_id(request_id or f"task-{task_id}")


@task_postrun.connect
def _forget_request_id(**_: object) -> None:
    request_ids.set_request_id(None)
