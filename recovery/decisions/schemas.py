"""The recovery API's input and output shapes: plans, options, fallback chains and retry policies.

Outputs are built with `model_construct` from values the services already checked (no second validation on
the plan's hot path) and dumped in Python mode, so that the renderer writes them as it always has.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING, Annotated, Any, Literal
from uuid import UUID

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    RootModel,
    StringConstraints,
    model_validator,
)

from core.slugs import SLUG, Slug
from recovery.decisions.fallbacks import MAX_CHAIN_OPTIONS, ChainOption
from recovery.decisions.services import PlanRequest
from recovery.errors.schemas import ErrorIn, with_error_defaults
from recovery.errors.taxonomy import ErrorClass, ErrorKind

if TYPE_CHECKING:
    from recovery.decisions.fallbacks import Chain
    from recovery.decisions.models import RetryPolicy
    from recovery.decisions.planner import Availability, OptionInput
    from recovery.decisions.policies import PolicyStep
    from recovery.decisions.services import Options, Planned

Operation = Annotated[str, StringConstraints(max_length=200)]
CacheKey = Annotated[str, StringConstraints(max_length=500)]
Action = Literal["retry", "fallback", "wait", "degrade", "escalate", "abort"]
FallbackKind = Literal["service", "cache", "static", "skip"]
MAX_ATTEMPT = 10_000
MAX_ELAPSED_S = 366 * 86_400  # a call retried for over a year is not a call any more


def _one_of(values: list[str]) -> AfterValidator:
    def check(value: str) -> str:
        if value and value not in values:
            raise ValueError(f"must be one of {', '.join(values)}")
        return value

    return AfterValidator(check)


# Optional query parameters: empty, or one of the vocabulary's names (a typo is a 400 naming the field).
OptionalClass = Annotated[str, _one_of(ErrorClass.values)]
OptionalKind = Annotated[str, _one_of(ErrorKind.values)]
OptionalSlug = Annotated[str, StringConstraints(pattern=r"^$|" + SLUG, max_length=100)]


# --- Input -------------------------------------------------------------------------------------------------


class PlanIn(BaseModel):
    """A failed call: what was called, the error (as in POST /errors), and which attempt it was."""

    model_config = ConfigDict(extra="forbid")

    service: Slug
    operation: Operation = ""
    error: ErrorIn
    attempt: int = Field(default=1, ge=1, le=MAX_ATTEMPT, description="The attempt that just failed, from 1.")
    task_id: Annotated[str, StringConstraints(max_length=200)] = ""
    elapsed_s: float | None = Field(
        default=None, ge=0, le=MAX_ELAPSED_S, description="Seconds since the first attempt started."
    )
    idempotency_key: Annotated[str, StringConstraints(max_length=200)] = Field(
        default="", description="Makes a non-idempotent operation safe to retry automatically."
    )
    cache_key: CacheKey = Field(
        default="", description="Which cached result a cache fallback may offer (as sent with outcomes)."
    )

    @model_validator(mode="before")
    @classmethod
    def _error_defaults(cls, data: Any) -> Any:
        return with_error_defaults(data)  # the error may leave out what the request already says

    @model_validator(mode="after")
    def _same_service(self) -> PlanIn:
        if self.error.service != self.service:
            raise ValueError("the error's service must be the plan's service")
        return self

    def to_request(self) -> PlanRequest:
        """The plan request as POST /recovery/plan and the MCP tool get_recovery_options hand it over."""
        return PlanRequest(
            service=self.service,
            operation=self.operation,
            error=self.error.to_report(),
            attempt=self.attempt,
            task_id=self.task_id,
            elapsed_s=self.elapsed_s,
            idempotency_key=self.idempotency_key,
            cache_key=self.cache_key,
        )


class OptionsQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    service: Slug
    operation: Operation = ""
    error_class: ErrorClass
    kind: OptionalKind = ""
    cache_key: CacheKey = ""


class ChainQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    service: Slug
    operation: Operation = ""
    cache_key: CacheKey = ""


class ChainOptionIn(BaseModel):
    """One option of a chain PUT sends. Each field belongs to one kind: `target_service` and `target_operation`
    to `service`, `static_value` to `static`, `max_age_s` to `cache` (recovery/decisions/fallbacks.py checks
    that, and that the target is another known service)."""

    model_config = ConfigDict(extra="forbid")

    kind: FallbackKind
    target_service: Slug | None = Field(
        default=None, description="A service option: the service called instead."
    )
    target_operation: Operation = Field(
        default="", description="A service option: the target's operation; empty: the same operation."
    )
    static_value: Any = Field(default=None, description="A static option: the default answered (any JSON).")
    max_age_s: float | None = Field(
        default=None, ge=0, allow_inf_nan=False, description="A cache option: the oldest result accepted."
    )
    warning: Annotated[str, StringConstraints(max_length=300)] = Field(
        default="", description="Said to the agent when the option is used."
    )
    description: Annotated[str, StringConstraints(max_length=2000)] = ""
    enabled: bool = True

    def to_option(self) -> ChainOption:
        return ChainOption(
            kind=self.kind,
            target_service=self.target_service,
            target_operation=self.target_operation,
            static_value=self.static_value,
            max_age_s=self.max_age_s,
            warning=self.warning,
            description=self.description,
            enabled=self.enabled,
        )


class ChainIn(BaseModel):
    """PUT /fallbacks/{service}: the whole chain of one operation, in the order its options are tried."""

    model_config = ConfigDict(extra="forbid")

    operation: Operation = Field(
        default="", description="The operation the chain is for; empty: every operation."
    )
    options: list[ChainOptionIn] = Field(
        max_length=MAX_CHAIN_OPTIONS, description="Tried in this order (positions 1..n); empty: no chain."
    )
    reason: Annotated[str, StringConstraints(min_length=1, max_length=2000, strip_whitespace=True)]

    def to_options(self) -> list[ChainOption]:
        return [o.to_option() for o in self.options]


class ResolveQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    service: OptionalSlug = ""
    operation: Operation = ""
    error_class: OptionalClass = ""
    kind: OptionalKind = ""


# --- Plans ---------------------------------------------------------------------------------------------------


class FallbackOut(BaseModel):
    kind: FallbackKind
    position: int
    service: str | None
    operation: str | None
    cached_at: str | None = Field(description="When a cached result was stored (ISO 8601).")
    warning: str | None
    value: Any = Field(description="The cached result or the static default.")

    @classmethod
    def of(cls, option: OptionInput) -> FallbackOut:
        return cls.model_construct(
            kind=option.kind,
            position=option.position,
            service=option.service,
            operation=option.operation,
            cached_at=option.cached_at,
            warning=option.warning,
            value=option.value,
        )


class PlanOut(BaseModel):
    plan_id: UUID
    action: Action
    delay_s: float | None
    fallback: FallbackOut | None
    attempts_left: int | None
    reason: str
    error_class: str
    severity: str
    kind: str
    retry_after_s: float | None
    breaker_state: str
    degradation_level: str
    policy: str | None

    @classmethod
    def of(cls, planned: Planned) -> PlanOut:
        d, i = planned.decision, planned.inputs
        return cls.model_construct(
            plan_id=planned.plan.pk,
            action=d.action,
            delay_s=d.delay_s,
            fallback=FallbackOut.of(d.fallback) if d.fallback else None,
            attempts_left=d.attempts_left,
            reason=d.reason,
            error_class=i.error_class,
            severity=i.severity,
            kind=i.kind,
            retry_after_s=i.retry_after_s,
            breaker_state=i.breaker.state,
            degradation_level=i.degradation_level,
            policy=i.policy.name,
        )


# --- Options -------------------------------------------------------------------------------------------------


class PolicyRefOut(BaseModel):
    name: str | None = Field(description="The policy that applies; null when none does.")
    scope: str | None = Field(description="operation, service, kind, error_class or global.")


class BreakerNowOut(BaseModel):
    state: str = Field(description="closed, half_open, open, forced_open, forced_closed, disabled, unknown")
    open_for_s: float | None = Field(description="Seconds until the breaker lets a call through.")


class BudgetNowOut(BaseModel):
    allowed: bool
    retries: int
    calls: int
    limit: int
    window_s: int
    note: str


class DegradationNowOut(BaseModel):
    level: str
    skips_service: bool


class OptionOut(BaseModel):
    action: Action
    available: bool
    why: str
    delay_s: float | None
    fallback: FallbackOut | None

    @classmethod
    def of(cls, a: Availability) -> OptionOut:
        return cls.model_construct(
            action=a.action,
            available=a.available,
            why=a.why,
            delay_s=a.delay_s,
            fallback=FallbackOut.of(a.fallback) if a.fallback else None,
        )


class OptionsOut(BaseModel):
    service: str
    operation: str
    error_class: str
    kind: str
    policy: PolicyRefOut
    breaker: BreakerNowOut
    budget: BudgetNowOut
    degradation: DegradationNowOut
    critical: bool
    options: list[OptionOut]

    @classmethod
    def of(cls, o: Options) -> OptionsOut:
        i = o.inputs
        return cls.model_construct(
            service=o.service,
            operation=o.operation,
            error_class=o.error_class,
            kind=o.kind,
            policy=PolicyRefOut.model_construct(name=i.policy.name, scope=o.policy_scope),
            breaker=BreakerNowOut.model_construct(**asdict(i.breaker)),
            budget=BudgetNowOut.model_construct(**asdict(i.budget)),
            degradation=DegradationNowOut.model_construct(
                level=i.degradation_level, skips_service=i.skipped_at_level
            ),
            critical=i.critical,
            options=[OptionOut.of(a) for a in o.options],
        )


# --- Fallback chains ---------------------------------------------------------------------------------------


class ChainOptionOut(BaseModel):
    id: int | None
    position: int
    kind: FallbackKind
    available: bool
    why: str
    scope: str = Field(description="The operation the option is configured for; empty: every operation.")
    service: str | None
    operation: str | None
    value: Any = Field(description="The cached result or the static default.")
    cached_at: str | None
    age_s: float | None
    warning: str | None

    @classmethod
    def of(cls, option: OptionInput) -> ChainOptionOut:
        return cls.model_construct(**asdict(option))


class ChainOut(BaseModel):
    service: str
    operation: str
    critical: bool
    chain: list[ChainOptionOut] = Field(description="In the order the options are tried.")
    exhausted: bool = Field(description="True when no option is available now.")

    @classmethod
    def of(cls, chain: Chain) -> ChainOut:
        return cls.model_construct(
            service=chain.service,
            operation=chain.operation,
            critical=chain.critical,
            chain=[ChainOptionOut.of(o) for o in chain.options],
            exhausted=not any(o.available for o in chain.options),
        )


# --- Retry policies ------------------------------------------------------------------------------------------


class RetryPolicyOut(BaseModel):
    id: int
    name: str
    description: str
    builtin: bool
    scope: Literal["operation", "service", "kind", "error_class", "global"]
    service: str | None
    operation: str
    error_class: str
    kind: str
    strategy: str
    max_attempts: int
    base_delay_s: float
    multiplier: float
    max_delay_s: float
    deadline_s: float | None
    honour_retry_after: bool
    retry_on: list[str]

    @classmethod
    def of(cls, policy: RetryPolicy) -> RetryPolicyOut:
        return cls.model_construct(
            id=policy.pk,
            name=policy.name,
            description=policy.description,
            builtin=policy.builtin,
            scope=policy.scope,
            service=policy.service.name if policy.service is not None else None,
            operation=policy.operation,
            error_class=policy.error_class,
            kind=policy.kind,
            strategy=policy.strategy,
            max_attempts=policy.max_attempts,
            base_delay_s=policy.base_delay_s,
            multiplier=policy.multiplier,
            max_delay_s=policy.max_delay_s,
            deadline_s=policy.deadline_s,
            honour_retry_after=policy.honour_retry_after,
            retry_on=policy.retry_on,
        )


class RetryPolicyList(RootModel[list[RetryPolicyOut]]):
    """Every retry policy, by name."""


class ChainStepOut(BaseModel):
    scope: str
    looked_for: str
    policy: str | None = Field(description="The policy found at this rung, or null.")


class ResolvedPolicyOut(BaseModel):
    policy: RetryPolicyOut | None = Field(description="The policy that applies; null: never retried.")
    scope: str | None
    why: str
    chain: list[ChainStepOut] = Field(description="The precedence chain, most specific first.")

    @classmethod
    def of(cls, steps: list[PolicyStep]) -> ResolvedPolicyOut:
        chosen = next((s for s in steps if s.policy is not None), None)
        why = []
        for step in steps:
            if step.policy is None:
                why.append(f"no policy for {step.looked_for}")
                continue
            why.append(f"{step.looked_for}: policy {step.policy.name!r}")
            break
        return cls.model_construct(
            policy=RetryPolicyOut.of(chosen.policy) if chosen and chosen.policy else None,
            scope=chosen.scope if chosen else None,
            why="; ".join(why) if chosen else "no policy applies: never retried",
            chain=[
                ChainStepOut.model_construct(
                    scope=s.scope, looked_for=s.looked_for, policy=s.policy.name if s.policy else None
                )
                for s in steps
            ],
        )
