"""A drill scenario as data: the services behind the loopback server with their faults, breaker settings and
fallbacks, the fleets' size, how long tasks keep starting and the weighted mix of tasks. Shipped scenarios live
in drill/scenarios/<name>.yaml; any other YAML or JSON file (by its suffix) may be given instead. Imports no
Django: the agent processes read it too."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, model_validator

SHIPPED = Path(__file__).resolve().parent / "scenarios"
SUFFIXES = {".yaml": "yaml", ".yml": "yaml", ".json": "json"}

Slug = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9._-]{0,99}$")]
Seconds = Annotated[float, Field(ge=0, le=3600, allow_inf_nan=False)]
Rate = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]
# What PATCH /api/v1/services/{service} takes besides criticality: the breaker's settings (docs/breakers.md).
BREAKER_SETTINGS = frozenset(
    {
        "failure_rate_threshold",
        "window_type",
        "window_size",
        "minimum_calls",
        "consecutive_failures",
        "slow_call_ms",
        "wait_duration_s",
        "half_open_max_calls",
        "success_threshold",
        "wait_multiplier",
        "max_wait_s",
    }
)


class ScenarioError(ValueError):
    """A scenario that cannot be used: `field` names where (dotted, e.g. `services.2.faults.transient_rate`)."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Window(Strict):
    """The service is down hard (connections cut, no answer) from `from_s` to `to_s` after t0."""

    from_s: Seconds
    to_s: Seconds

    @model_validator(mode="after")
    def _ordered(self) -> Window:
        if self.to_s <= self.from_s:
            raise ValueError("to_s must be after from_s")
        return self


class Faults(Strict):
    """What the loopback server does to this service's calls. The rates are drawn per call (task, step,
    attempt), in this order: transient 503, then 429; a call that passes may still be slow."""

    transient_rate: Rate = 0.0  # 503 Service Unavailable (or `transient_status`)
    # The status of those transient failures: 503, or 504 Gateway Timeout (a timeout, which Rebound's built-in
    # policies retry with exponential backoff rather than at a fixed 2 s: room for a learned delay).
    transient_status: Literal[503, 504] = 503
    hold_s: Seconds = (
        0.0  # after a transient failure, the same task's calls to this service keep failing this long
    )
    rate_limit_rate: Rate = 0.0  # 429 with Retry-After
    retry_after_s: Annotated[float, Field(ge=0.1, le=60, allow_inf_nan=False)] = 1.0
    slow_rate: Rate = 0.0
    slow_s: Annotated[float, Field(ge=0, le=30, allow_inf_nan=False)] = 0.5
    outages: tuple[Window, ...] = ()
    always_401: bool = False  # a permanent failure: no retry can help, a human must act

    @model_validator(mode="after")
    def _rates(self) -> Faults:
        if self.transient_rate + self.rate_limit_rate > 1:
            raise ValueError("transient_rate + rate_limit_rate must be at most 1")
        return self


class Fallback(Strict):
    """One option of the service's fallback chain in Rebound (kind `service`: call `target` instead)."""

    kind: Literal["service", "static", "cache"]
    target: Slug | None = None
    value: Any = None
    max_age_s: Annotated[float, Field(gt=0, le=86_400)] | None = None

    @model_validator(mode="after")
    def _target(self) -> Fallback:
        if self.kind == "service" and not self.target:
            raise ValueError("a service fallback needs a target")
        if self.kind != "service" and self.target:
            raise ValueError("only a service fallback has a target")
        return self


class ServiceSpec(Strict):
    name: Slug
    operation: Slug = "call"
    criticality: Literal["essential", "non_critical"] = "non_critical"
    breaker: dict[str, float | int | str] = Field(default_factory=dict)
    faults: Faults = Faults()
    fallbacks: tuple[Fallback, ...] = ()

    @model_validator(mode="after")
    def _breaker(self) -> ServiceSpec:
        unknown = sorted(set(self.breaker) - BREAKER_SETTINGS)
        if unknown:
            raise ValueError(f"unknown breaker settings {unknown}; known: {sorted(BREAKER_SETTINGS)}")
        return self

    @property
    def permanent(self) -> bool:
        return self.faults.always_401


class TaskKind(Strict):
    """One kind of task: the services it calls, in order, and how often it is drawn relative to the others."""

    weight: Annotated[float, Field(gt=0, le=1_000_000)] = 1.0
    steps: tuple[Slug, ...] = Field(min_length=1, max_length=50)


class Scenario(Strict):
    name: Slug
    description: str = ""
    seed: int = Field(default=1, ge=0, le=2**63 - 1)  # --seed overrides it
    agents: int = Field(ge=1, le=200)  # per fleet
    tasks_per_agent: int = Field(ge=1, le=10_000)
    duration_s: Annotated[float, Field(gt=0, le=3600)]  # tasks start within this
    drain_s: Annotated[float, Field(ge=0, le=3600)] = 30.0  # and have this long after it to finish
    call_timeout_s: Annotated[float, Field(gt=0, le=60)] = 5.0
    services: tuple[ServiceSpec, ...] = Field(min_length=1)
    tasks: tuple[TaskKind, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _references(self) -> Scenario:
        names = [s.name for s in self.services]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"services named twice: {twice}")
        known = set(names)
        for s in self.services:
            for f in s.fallbacks:
                if f.target is not None and f.target not in known:
                    raise ValueError(
                        f"fallback target {f.target!r} of {s.name} is not a service of the scenario"
                    )
        for task in self.tasks:
            missing = sorted(set(task.steps) - known)
            if missing:
                raise ValueError(f"task steps name unknown services {missing}")
        return self

    def service(self, name: str) -> ServiceSpec | None:
        return next((s for s in self.services if s.name == name), None)

    @property
    def permanent_services(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.services if s.permanent)

    @property
    def deadline_s(self) -> float:
        """When every agent must have ended, since t0."""
        return self.duration_s + self.drain_s


def shipped() -> list[str]:
    return sorted(p.stem for p in SHIPPED.glob("*.yaml"))


def load(name_or_path: str | Path) -> Scenario:
    """A shipped scenario by name (`smoke`, `full`), or a YAML or JSON file by its path."""
    path = _locate(str(name_or_path))
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ScenarioError("scenario", f"cannot read {path}: {error.strerror or error}") from error
    try:
        data = json.loads(text) if SUFFIXES[path.suffix.lower()] == "json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as error:
        raise ScenarioError(
            "scenario", f"{path.name} is not valid {SUFFIXES[path.suffix.lower()]}: {error}"
        ) from error
    return parse(data)


def parse(data: object) -> Scenario:
    """A scenario from plain data (a dict as YAML or JSON gives it)."""
    if not isinstance(data, dict):
        raise ScenarioError("scenario", "must be a mapping of fields")
    try:
        return Scenario.model_validate(data)
    except ValidationError as error:
        first = error.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or "scenario"
        raise ScenarioError(field, first["msg"].removeprefix("Value error, ")) from error


def _locate(name_or_path: str) -> Path:
    path = Path(name_or_path)
    if path.suffix.lower() in SUFFIXES or path.exists():
        if path.suffix.lower() not in SUFFIXES:
            raise ScenarioError("scenario", f"{path.name}: a scenario file ends in .yaml, .yml or .json")
        if not path.is_file():
            raise ScenarioError("scenario", f"no such file: {path}")
        return path
    shipped_path = SHIPPED / f"{name_or_path}.yaml"
    if "/" in name_or_path or not shipped_path.is_file():
        raise ScenarioError(
            "scenario", f"no shipped scenario named {name_or_path!r} (shipped: {', '.join(shipped())})"
        )
    return shipped_path
