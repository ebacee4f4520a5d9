"""Celery tasks an agent may ask Rebound to run (server-side retries now, saga compensations later).

Only names in REGISTERED_TASKS (plus the built-in demo tasks) are ever run, never an arbitrary name from a
request: an agent's key must not become a way to run any code the workers can import. Arguments are JSON.
`run` calls the task's function in the calling process (a worker already running a Rebound task), so its
outcome is known at once and becomes an attempt's row.
"""

from __future__ import annotations

import importlib
import inspect
import json
import time
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from celery import Task, current_app
from django.core.serializers.json import DjangoJSONEncoder

from core.api.errors import InvalidInput
from core.infra.conf import rebound
from recovery.errors.classification import ErrorReport

BUILTIN_TASKS = ("recovery.demo_tasks.echo", "recovery.demo_tasks.flaky")
MAX_ARGUMENT_BYTES = 64 * 1024
# A task declares that running it twice does no more than running it once with `@shared_task(..., idempotent=
# True)` (Celery keeps unknown options as attributes of the task): Rebound may then send it again when it cannot
# know whether an attempt ran (its worker was lost mid-call).
IDEMPOTENT_OPTION = "idempotent"


@dataclass(frozen=True)
class TaskRunResult:
    ok: bool
    value: Any
    error: ErrorReport | None
    duration_ms: float


def registered() -> tuple[str, ...]:
    return tuple(dict.fromkeys([*BUILTIN_TASKS, *rebound("REGISTERED_TASKS")]))


def find(name: str) -> Task | None:
    """The registered task of that name, importing its module if this process has not yet."""
    if name not in registered():
        return None
    task = current_app.tasks.get(name)
    if task is None:
        # Rebound's own tasks live in the rooms' tasks.py under names kept from before the rooms (a name is a
        # wire format): load every module the Celery app discovers, as a worker does at start-up.
        current_app.loader.import_default_modules()
        task = current_app.tasks.get(name)
    if task is None and "." in name:
        try:
            importlib.import_module(name.rsplit(".", 1)[0])
        except ImportError:
            return None
        task = current_app.tasks.get(name)
    return task


def _json_size(value: Any) -> int:
    return len(json.dumps(value, allow_nan=False))


def validate_task(
    name: str,
    args: list[Any],
    kwargs: dict[str, Any],
    field_prefix: str = "task",
    added: Collection[str] = (),
) -> None:
    """InvalidInput naming the field if the task is not registered, its arguments are not JSON, or they do not
    fit its signature (with the keyword arguments Rebound adds at call time, `added`): a call that could only
    fail with a TypeError is refused now rather than at its first attempt, or at a rollback."""
    if name not in registered():
        raise InvalidInput(
            f"{name!r} is not a registered task: the tasks Rebound may run are listed in REGISTERED_TASKS",
            field=f"{field_prefix}.name",
        )
    task = find(name)
    if task is None:
        raise InvalidInput(
            f"{name!r} is registered but no such Celery task can be loaded", field=f"{field_prefix}.name"
        )
    if not isinstance(args, list):
        raise InvalidInput("must be a list", field=f"{field_prefix}.args")
    if not isinstance(kwargs, dict) or not all(isinstance(k, str) for k in kwargs):
        raise InvalidInput("must be an object", field=f"{field_prefix}.kwargs")
    for part, value in (("args", args), ("kwargs", kwargs)):
        try:
            size = _json_size(value)
        except (TypeError, ValueError):
            raise InvalidInput("must be JSON values", field=f"{field_prefix}.{part}") from None
        if size > MAX_ARGUMENT_BYTES:
            raise InvalidInput(f"at most {MAX_ARGUMENT_BYTES} bytes of JSON", field=f"{field_prefix}.{part}")
    check_signature(task, args, {**dict.fromkeys(added), **kwargs}, field_prefix)


def signature(task: Task) -> inspect.Signature | None:
    """The parameters the task's function takes (a bound task's without `self`); None when Python cannot
    tell (a C function), and then nothing is checked."""
    try:
        return inspect.signature(task.run)
    except (TypeError, ValueError):
        return None


def accepts_keyword(task: Task, keyword: str) -> bool:
    """Whether the task's function takes this keyword argument (by name, or in **kwargs)."""
    found = signature(task)
    if found is None:
        return False
    return any(
        p.name == keyword or p.kind == inspect.Parameter.VAR_KEYWORD for p in found.parameters.values()
    )


def declared_idempotent(task: Task) -> bool:
    """Whether the task says that running it twice does no more than once (IDEMPOTENT_OPTION)."""
    return getattr(task, IDEMPOTENT_OPTION, False) is True


def check_signature(task: Task, args: list[Any], kwargs: dict[str, Any], field_prefix: str) -> None:
    """InvalidInput naming `args` or `kwargs` when the call would be refused by Python itself: a required
    argument missing, one too many, an unknown keyword."""
    found = signature(task)
    if found is None:
        return
    try:
        found.bind(*args, **kwargs)
    except TypeError as error:
        # "too many positional arguments" is about args; the rest (missing, unexpected keyword, given twice)
        # is what kwargs must supply or leave out.
        part = "args" if "positional" in str(error) else "kwargs"
        raise InvalidInput(
            f"the arguments do not fit {task.name}{found}: {error}", field=f"{field_prefix}.{part}"
        ) from None


def error_report(error: BaseException) -> ErrorReport:
    """An exception as the classifier reads it: `ConnectionError`, `httpx.ReadTimeout`, `mylib.QuotaError`."""
    cls = type(error)
    module = cls.__module__
    type_name = cls.__qualname__ if module in ("builtins", "__main__") else f"{module}.{cls.__qualname__}"
    status = getattr(error, "status_code", None)
    retry_after = getattr(error, "retry_after_s", None) or getattr(error, "retry_after", None)
    return ErrorReport(
        type_name=type_name,
        message=str(error) or cls.__name__,
        status_code=status if isinstance(status, int) and 100 <= status <= 599 else None,
        retry_after_s=float(retry_after)
        if isinstance(retry_after, int | float) and retry_after >= 0
        else None,
    )


def _as_json(value: Any) -> Any:
    # A task may answer anything; what is stored must be JSON (dates and decimals as text).
    return json.loads(json.dumps(value, cls=DjangoJSONEncoder, default=repr))


def run(name: str, args: list[Any], kwargs: dict[str, Any]) -> TaskRunResult:
    """Run the registered task's function here and now. Never raises for the task's own failures."""
    started = time.perf_counter()
    task = find(name)
    if task is None:
        report = ErrorReport(
            type_name="celery.exceptions.NotRegistered",
            message=f"{name!r} is not a registered task in this worker",
        )
        return TaskRunResult(False, None, report, _ms(started))
    try:
        value = task(*args, **kwargs)
    except Exception as error:  # the task's failure is the attempt's outcome, whatever it is
        return TaskRunResult(False, None, error_report(error), _ms(started))
    return TaskRunResult(True, _as_json(value), None, _ms(started))


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)
