"""Reads of server-side retries. Every output shows a job's request and task through `request_shown` and
`task_shown`, which hide secrets (Authorization, cookies, API keys in headers, query strings and task
arguments): they are stored to be sent, never shown."""

from __future__ import annotations

import uuid
from typing import Any

from django.db.models import QuerySet

from core.access.models import Agent
from core.api.errors import NotFound
from recovery.calls import outbound
from recovery.retries.models import RetryAttempt, RetryJob

NEWEST_SHOWN = 5


def jobs(
    *,
    agent: Agent | None,
    state: str | None = None,
    service: str | None = None,
    needs_human: bool | None = None,
) -> QuerySet[RetryJob]:
    """Jobs newest first. `agent`: only that agent's (an agent's key sees nothing else); None: all of them."""
    qs = RetryJob.objects.select_related("service", "agent", "created_by")
    if agent is not None:
        qs = qs.filter(agent=agent)
    if state:
        qs = qs.filter(state=state)
    if service:
        qs = qs.filter(service__name=service)
    if needs_human is not None:
        qs = qs.filter(needs_human=needs_human)
    return qs.order_by("-created_at", "-id")


def job_uuid(job_id: uuid.UUID | str) -> uuid.UUID:
    """A job's id from a URL: anything but a UUID is simply not found."""
    try:
        return job_id if isinstance(job_id, uuid.UUID) else uuid.UUID(str(job_id))
    except ValueError:
        raise NotFound(f"No retry job {job_id}.", field="id") from None


def job(job_id: uuid.UUID | str, *, agent: Agent | None) -> RetryJob:
    """One job; another agent's job is not found, as if it did not exist."""
    found = jobs(agent=agent).filter(pk=job_uuid(job_id)).first()
    if found is None:
        raise NotFound(f"No retry job {job_id}.", field="id")
    return found


def attempts(job: RetryJob) -> list[RetryAttempt]:
    return list(job.attempt_rows.order_by("number"))


def request_shown(job: RetryJob) -> dict[str, Any] | None:
    """An http job's request with its secrets hidden (headers, query values); None for a task job."""
    return outbound.redact_request(job.request) if job.kind == RetryJob.Kind.HTTP else None


def task_shown(job: RetryJob) -> dict[str, Any] | None:
    """A task job's call with secret-looking kwargs hidden; None for an http job."""
    if job.kind != RetryJob.Kind.TASK:
        return None
    return outbound.redact_task({"name": job.task_name, "args": job.task_args, "kwargs": job.task_kwargs})


def needing_human(limit: int = NEWEST_SHOWN) -> dict[str, Any]:
    """Exhausted or unretryable jobs waiting for a human: how many, and the newest few (for /status)."""
    waiting = jobs(agent=None, needs_human=True).order_by("-finished_at", "-created_at")
    return {
        "count": waiting.count(),
        "newest": [
            {
                "id": str(j.pk),
                "service": j.service.name,
                "operation": j.operation,
                "kind": j.kind,
                "attempts": j.attempts,
                "error_class": (j.last_error or {}).get("error_class"),
                "why": (j.last_error or {}).get("decision"),
                "finished_at": j.finished_at,
            }
            for j in waiting[:limit]
        ],
    }
