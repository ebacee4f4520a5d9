"""The Celery app. Tasks carry the request id of whoever enqueued them, so logs join up across processes."""

from __future__ import annotations

import os
from typing import Any

import kombu
from celery import Celery
from celery.app.amqp import AMQP
from celery.signals import beat_init, before_task_publish, task_postrun, task_prerun, worker_process_init

from core.infra import request_ids

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")


class BrokerConnection(kombu.Connection):
    """kombu's Connection, closed so that a lost Redis cannot kill the worker (issue 11, item 29).

    When the broker connection is lost, Celery's consumer first `collect()`s the connection, then `close()`s it.
    kombu's `_do_close_self` tries to close the default channel (the one the task consumer reads from) but keeps
    it when that fails, which it does while Redis is down: the channel still waits on its BRPOP, or needs Redis
    to delete its fanout queues, and stops before it has put back its unacknowledged messages. `collect()` then
    detaches the transport (`transport.client = None`) all the same. Celery's `close()` closes that same channel
    a second time; now it does reach "Restoring N unacknowledged message(s)", which must build a new Redis pool
    from `transport.client.hostname`: AttributeError, which is neither a connection nor a channel error, so it
    escapes Celery's `ignore_errors` and the worker stops with "Unrecoverable error". A channel is closed once,
    whether or not that went well. Its unacknowledged messages stay in Redis's `unacked` hash (kept with AOF)
    until the running task acknowledges them after the reconnection, or are delivered again after the
    visibility timeout if it never does, as for a worker that died. tests/ops/test_broker_restarts.py.
    """

    def _do_close_self(self) -> None:
        try:
            super()._do_close_self()
        finally:
            self._default_channel = None


class ReboundAMQP(AMQP):
    Connection = BrokerConnection
    BrokerConnection = BrokerConnection


app = Celery("rebound", amqp="config.celery:ReboundAMQP")
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
        "healing.checks",
        "healing.actions",
        "healing.remediation",
        "healing.escalations",
        "healing.notifications",
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


# Traces (docs/tracing.md), off unless OTEL_EXPORTER_OTLP_ENDPOINT is set: in each pool process, after the fork
# (the span exporter's thread does not survive one), and in beat. Imported here, once Django's apps are loaded.
@worker_process_init.connect
def _trace_worker(**_: object) -> None:
    from core.infra import tracing

    tracing.configure("worker")


@beat_init.connect
def _trace_beat(**_: object) -> None:
    from core.infra import tracing

    tracing.configure("beat")
