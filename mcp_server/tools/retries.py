"""retry_operation: hand an operation to Rebound's server-side retry engine, or read a job it holds. The same
input, service and output as POST /api/v1/retries and GET /api/v1/retries/{id} (recovery/retries/api.py)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, Field, TypeAdapter

from core.api.errors import InvalidInput, NotFound
from core.api.validation import parse
from core.slugs import Slug
from mcp_server import callers, running
from mcp_server.running import tool
from recovery.calls.outbound import RequestIn
from recovery.retries import selectors, services
from recovery.retries.schemas import JobKind, Key, RetryJobDetailOut, RetryJobIn, TaskCallIn

_JOB_IN = TypeAdapter(RetryJobIn)
BOTH = "give either job_id (to read a job) or the job to create, not both"


class RetryOperationOut(BaseModel):
    created: bool | None = Field(
        description="true: a new job; false: the job this idempotency key already named (nothing new was "
        "created); null: a look-up by job_id."
    )
    job: RetryJobDetailOut = Field(description="The job with every attempt so far; secrets in it hidden.")


@tool(title="Retry an operation on Rebound's workers", read_only=False, destructive=False, idempotent=True)
def retry_operation(
    caller: callers.Caller,
    job_id: Annotated[
        str | None,
        Field(description="A retry job's id: answer its state and attempts. Give nothing else with it."),
    ] = None,
    service: Annotated[
        Slug | None, Field(description="The service called: its breaker is asked before each attempt.")
    ] = None,
    operation: Annotated[
        str | None, Field(max_length=200, description="The operation, for policies.")
    ] = None,
    kind: Annotated[JobKind | None, Field(description="http (give `request`) or task (give `task`).")] = None,
    request: Annotated[
        RequestIn | None,
        Field(description="kind http: the request to make (its host must be in OUTBOUND_ALLOWED_HOSTS)."),
    ] = None,
    task: Annotated[TaskCallIn | None, Field(description="kind task: the registered task to run.")] = None,
    idempotency_key: Annotated[
        Key | None,
        Field(
            description="Required to create: the same key from the same caller answers the same job (a "
            "different operation under it is refused); sent to HTTP targets as Idempotency-Key."
        ),
    ] = None,
    policy: Annotated[
        str | None,
        Field(
            min_length=1,
            max_length=100,
            description="A retry policy's name; default: the one resolved for the service and operation.",
        ),
    ] = None,
) -> RetryOperationOut:
    """Hand a failed operation (an HTTP request or a registered task) to Rebound, which runs and retries it on
    its own workers under the service's retry policy and breaker; or, given job_id, read a job's state and
    attempts. Creating needs an agent's or an operator's key and an idempotency_key (a repeat answers the same
    job); reading needs any key, and an agent sees only its own jobs. Secret headers are never shown back."""
    given = {
        "service": service,
        "operation": operation,
        "kind": kind,
        "request": running.as_sent(request),
        "task": running.as_sent(task),
        "idempotency_key": idempotency_key,
        "policy": policy,
    }
    body = {name: value for name, value in given.items() if value is not None}
    if job_id is not None:
        return _look_up(caller, job_id, body)
    return _create(caller, body)


def _look_up(caller: callers.Caller, job_id: str, body: dict[str, Any]) -> RetryOperationOut:
    callers.require_reader(caller, "retry_operation")
    if body:
        raise InvalidInput(BOTH, field="job_id")
    try:
        job = selectors.job(job_id, agent=caller.agent)
    except NotFound as error:
        # The REST route names its path parameter `id`; here the argument is job_id.
        raise NotFound(error.message, field="job_id") from None
    return RetryOperationOut(created=None, job=RetryJobDetailOut.of_detail(job, selectors.attempts(job)))


def _create(caller: callers.Caller, data: dict[str, Any]) -> RetryOperationOut:
    callers.require_agent_or_operator(caller, "retry_operation")
    body = parse(_JOB_IN, data)
    new = services.NewJob.of(body)
    job, created = services.create_job(new, actor=caller.actor)
    return RetryOperationOut(created=created, job=RetryJobDetailOut.of_detail(job, selectors.attempts(job)))
