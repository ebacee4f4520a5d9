"""Fallback chains (order and availability of each kind), the result cache (TTL and size limit), GET
/fallbacks/{service}, and the admin of policies, operations and chains (audited)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from django.conf import settings
from django.core.cache.backends.locmem import LocMemCache
from django.test import Client, override_settings

from core.admin_helpers import CONFIRMED
from core.audit.models import AuditEvent
from recovery.breakers.models import Service
from recovery.decisions import fallbacks, policies
from recovery.decisions.fallbacks import ResultCache, result_key
from recovery.decisions.models import FallbackInvocation, FallbackOption, Operation, RecoveryPlan, RetryPolicy
from tests.support.admin_helpers import url
from tests.support.factories import rebound_settings

pytestmark = [pytest.mark.django_db, pytest.mark.redis]
TEST_REDIS_URL: str = settings.TEST_REDIS_URL  # type: ignore[misc]


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(autouse=True)
def fresh() -> Iterator[None]:
    policies.forget()
    fallbacks.use_results(None)
    yield
    policies.forget()
    fallbacks.use_results(None)


@pytest.fixture
def svc() -> Service:
    return Service.objects.create(name="svc", minimum_calls=4, consecutive_failures=0)


def option(service: Service, position: int, kind: str, **fields: Any) -> FallbackOption:
    return FallbackOption.objects.create(service=service, position=position, kind=kind, **fields)


def trip(client: Any, name: str) -> None:
    fail = {"service": name, "success": False, "error": {"status_code": 503}}
    assert client.post("/api/v1/outcomes", [fail] * 5, format="json").status_code == 200


def chain(client: Any, service: str = "svc", **query: str) -> dict[str, Any]:
    response = client.get(f"/api/v1/fallbacks/{service}", query)
    assert response.status_code == 200, response.json()
    return response.json()  # type: ignore[no-any-return]


# --- the chain ---------------------------------------------------------------------------------------------


def test_it_orders_the_operations_own_options_before_the_general_ones(
    svc: Service, agent_client: Any
) -> None:
    general_2 = option(svc, 2, "static", static_value="general 2")
    general_1 = option(svc, 1, "static", static_value="general 1")
    own_5 = option(svc, 5, "static", static_value="own 5", operation="search")
    option(svc, 1, "static", static_value="another operation's", operation="other")

    body = chain(agent_client, operation="search")

    assert [(o["id"], o["scope"], o["position"]) for o in body["chain"]] == [
        (own_5.pk, "search", 5),
        (general_1.pk, "", 1),
        (general_2.pk, "", 2),
    ]
    assert [o["id"] for o in chain(agent_client)["chain"]] == [general_1.pk, general_2.pk]


def test_it_says_why_each_option_is_or_is_not_available(svc: Service, agent_client: Any) -> None:
    down = Service.objects.create(name="down", minimum_calls=4, consecutive_failures=0)
    up = Service.objects.create(name="up")
    option(svc, 1, "service", target_service=down, target_operation="find")
    option(svc, 2, "service", target_service=up)
    option(svc, 3, "cache")
    option(svc, 4, "static", static_value={"items": []}, enabled=False)
    option(svc, 5, "static", static_value={"items": []})
    option(svc, 6, "skip", warning="results may be incomplete")
    trip(agent_client, "down")

    body = chain(agent_client, operation="search")

    assert (body["service"], body["operation"], body["critical"], body["exhausted"]) == (
        "svc",
        "search",
        False,
        False,
    )
    rows = [(o["kind"], o["available"], o["why"]) for o in body["chain"]]
    assert rows[0][:2] == ("service", False)
    assert rows[0][2].startswith("down/find: breaker open for ")
    assert rows[1:] == [
        ("service", True, "up/search: breaker closed"),
        ("cache", False, "no cached result"),
        ("static", False, "disabled by an operator"),
        ("static", True, "a static default"),
        ("skip", True, "non-critical work: skip it with a partial result"),
    ]
    assert (body["chain"][1]["service"], body["chain"][1]["operation"]) == ("up", "search")
    assert body["chain"][4]["value"] == {"items": []}
    assert body["chain"][5]["warning"] == "results may be incomplete"


def test_it_treats_a_forced_open_target_as_down(
    svc: Service, agent_client: Any, operator_client: Any
) -> None:
    target = Service.objects.create(name="target")
    option(svc, 1, "service", target_service=target)
    override = {"mode": "forced_open", "reason": "maintenance"}
    assert (
        operator_client.post("/api/v1/breakers/target/override", override, format="json").status_code == 200
    )

    body = chain(agent_client)

    assert (body["chain"][0]["available"], body["chain"][0]["why"]) == (False, "target: breaker forced open")
    assert body["exhausted"] is True


@pytest.mark.parametrize(
    ("criticality", "operation", "available"),
    [
        ("non_critical", None, True),
        ("essential", None, False),
        ("essential", False, True),
        ("non_critical", True, False),
    ],
)
def test_it_skips_only_non_critical_work(
    agent_client: Any, criticality: str, operation: bool | None, available: bool
) -> None:
    service = Service.objects.create(name="svc", criticality=criticality)
    if operation is not None:
        Operation.objects.create(service=service, name="op", critical=operation)
    option(service, 1, "skip")

    body = chain(agent_client, operation="op")

    assert (body["critical"], body["chain"][0]["available"]) == (not available, available)
    assert body["exhausted"] is (not available)


def test_it_offers_a_cached_result_only_for_its_key_and_while_young_enough(
    svc: Service, agent_client: Any
) -> None:
    clock = Clock()
    fallbacks.use_results(ResultCache(clock=clock))
    option(svc, 1, "cache", max_age_s=60)
    fallbacks.results().put_many([("svc", "search", "q=cats", ["a cat"])], at=clock.now - 30)

    young = chain(agent_client, operation="search", cache_key="q=cats")["chain"][0]
    other = chain(agent_client, operation="search", cache_key="q=dogs")["chain"][0]
    other_operation = chain(agent_client, operation="find", cache_key="q=cats")["chain"][0]
    clock.now += 31
    old = chain(agent_client, operation="search", cache_key="q=cats")["chain"][0]

    assert (young["available"], young["value"], young["age_s"]) == (True, ["a cat"], 30.0)
    assert young["why"] == "a result cached 30 s ago for cache_key 'q=cats'"
    assert young["cached_at"] == "2027-01-15T07:59:30+00:00"
    assert (other["available"], other["why"]) == (False, "no cached result for cache_key 'q=dogs'")
    assert other_operation["available"] is False
    assert (old["available"], old["value"], old["age_s"]) == (False, None, 61.0)
    assert old["why"] == "the cached result for cache_key 'q=cats' is 61 s old; at most 60 s is accepted"


def test_it_answers_404_for_an_unknown_service_and_names_bad_fields(agent_client: Any) -> None:
    unknown = agent_client.get("/api/v1/fallbacks/nope")
    assert unknown.status_code == 404 and unknown.json()["errors"][0]["field"] == "service"
    assert not Service.objects.filter(name="nope").exists()
    bad = agent_client.get("/api/v1/fallbacks/Bad%20Name")
    assert bad.status_code == 400 and bad.json()["errors"][0]["field"] == "service"
    Service.objects.create(name="svc")
    typo = agent_client.get("/api/v1/fallbacks/svc", {"opration": "x"})
    assert typo.status_code == 400 and typo.json()["errors"][0]["field"] == "opration"


def test_it_reports_an_empty_chain_as_exhausted(svc: Service, viewer_client: Any) -> None:
    assert chain(viewer_client) == {
        "service": "svc",
        "operation": "",
        "critical": False,
        "chain": [],
        "exhausted": True,
    }


def test_it_degrades_with_a_skip_option_and_records_its_use(svc: Service, agent_client: Any) -> None:
    option(svc, 1, "skip", warning="the summary leaves out the calendar")
    body = {"service": "svc", "operation": "calendar", "error": {"status_code": 503}, "attempt": 4}

    answer = agent_client.post("/api/v1/recovery/plan", body, format="json").json()

    assert (answer["action"], answer["fallback"]["kind"]) == ("degrade", "skip")
    assert answer["fallback"]["warning"] == "the summary leaves out the calendar"
    plan = RecoveryPlan.objects.get()
    invocation = FallbackInvocation.objects.get()
    assert (invocation.kind, invocation.plan, invocation.operation) == ("skip", plan, "calendar")


# --- the result cache --------------------------------------------------------------------------------------


def test_it_caches_a_successful_outcomes_result_in_redis_with_a_ttl(agent_client: Any) -> None:
    outcome = {
        "service": "svc",
        "operation": "status",
        "success": True,
        "cache_key": "eu",
        "result": {"ok": 1},
    }
    with override_settings(REBOUND=rebound_settings(RESULT_CACHE_TTL_SECONDS=120)):
        assert agent_client.post("/api/v1/outcomes", outcome, format="json").status_code == 200

    client: Any = redis.Redis.from_url(TEST_REDIS_URL)
    key = result_key("svc", "status", "eu")
    assert key.startswith("rebound:result:{svc}:")
    assert 110 < client.ttl(key) <= 120
    cached = fallbacks.results().get("svc", "status", "eu")
    assert cached is not None and cached.value == {"ok": 1}
    assert fallbacks.results().get("svc", "status", "") is None


def test_it_keeps_the_latest_result_and_caches_nothing_from_failures(agent_client: Any) -> None:
    outcomes = [
        {"service": "svc", "operation": "status", "success": True, "result": 1},
        {"service": "svc", "operation": "status", "success": True, "result": 2},
        {"service": "svc", "operation": "status", "success": False},
        {"service": "svc", "operation": "status", "success": True},  # no result: nothing to cache
    ]
    assert agent_client.post("/api/v1/outcomes", outcomes, format="json").status_code == 200
    cached = fallbacks.results().get("svc", "status", "")
    assert cached is not None and cached.value == 2


@override_settings(REBOUND=rebound_settings(RESULT_CACHE_MAX_BYTES=300))
def test_it_refuses_results_over_the_size_limit(agent_client: Any) -> None:
    big = {"service": "svc", "success": True, "result": "x" * 300}
    response = agent_client.post("/api/v1/outcomes", big, format="json")
    assert response.status_code == 400
    [error] = response.json()["errors"]
    assert error["field"] == "result"
    assert error["message"] == "the result is 302 bytes as JSON; at most 300 are cached"
    assert not Service.objects.filter(name="svc").exists()  # nothing of a refused batch is recorded
    # Behind the API, the cache itself skips what is too large.
    assert fallbacks.results().put_many([("svc", "", "", "y" * 400), ("svc", "", "small", "y")]) == 1
    assert fallbacks.results().get("svc", "", "") is None


def test_it_caches_in_djangos_cache_without_redis(settings: Any) -> None:
    settings.REDIS_URL = ""
    clock = Clock()
    store = ResultCache(LocMemCache(f"results-{uuid.uuid4()}", {}), clock=clock)
    assert store.put_many([("svc", "op", "k", {"a": [1, 2]})]) == 1
    clock.now += 5
    cached = store.get("svc", "op", "k")
    assert cached is not None
    assert (cached.value, cached.age_s(clock.now)) == ({"a": [1, 2]}, 5.0)


# --- the admin ---------------------------------------------------------------------------------------------


def audit(action: str) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action=action).order_by("id"))


def policy_form(policy: RetryPolicy, **changes: Any) -> dict[str, Any]:
    data = {
        "name": policy.name,
        "description": policy.description,
        "service": policy.service_id or "",
        "operation": policy.operation,
        "error_class": policy.error_class,
        "kind": policy.kind,
        "strategy": policy.strategy,
        "max_attempts": policy.max_attempts,
        "base_delay_s": policy.base_delay_s,
        "multiplier": policy.multiplier,
        "max_delay_s": policy.max_delay_s,
        "deadline_s": policy.deadline_s or "",
        "honour_retry_after": "on" if policy.honour_retry_after else "",
        "retry_on": policy.retry_on,
        **changes,
    }
    return {k: v for k, v in data.items() if v != ""}


def _edit_database_lock(operator: Client, **changes: Any) -> Any:
    builtin = RetryPolicy.objects.get(name="database lock")
    return operator.post(url("recovery_retrypolicy_change", builtin.pk), policy_form(builtin, **changes))


def test_it_shows_a_built_in_policys_delays(operator: Client) -> None:
    builtin = RetryPolicy.objects.get(name="database lock")
    page = operator.get(url("recovery_retrypolicy_change", builtin.pk)).content.decode()
    assert "0.1 s, 0.1 s, 0.1 s" in page  # the delays between its four attempts


def test_it_edits_a_built_in_policy_only_with_a_reason(operator: Client) -> None:
    refused = _edit_database_lock(operator, max_attempts=6)
    assert refused.status_code == 200  # no reason: nothing changes
    response = _edit_database_lock(
        operator, max_attempts=6, audit_reason="longer lock waits since the migration"
    )

    assert response.status_code == 302
    builtin = RetryPolicy.objects.get(name="database lock")
    assert (builtin.max_attempts, builtin.builtin) == (6, True)


def test_it_audits_an_edit_of_a_built_in_policy(operator: Client) -> None:
    _edit_database_lock(operator, max_attempts=6, audit_reason="longer lock waits since the migration")
    [event] = audit("retry_policy.update")
    assert (event.reason, event.source, event.actor_user) == (
        "longer lock waits since the migration",
        "admin",
        operator.user,  # type: ignore[attr-defined]
    )
    assert (event.before["max_attempts"], event.after["max_attempts"]) == (4, 6)  # type: ignore[index]


def test_it_puts_an_edited_policy_in_force_at_once(operator: Client) -> None:
    _edit_database_lock(operator, max_attempts=6, audit_reason="longer lock waits since the migration")
    assert policies.resolve(None, "", "transient", "database_lock").max_attempts == 6  # in force here at once


def test_it_never_deletes_a_built_in_policy(operator: Client) -> None:
    builtin = RetryPolicy.objects.get(name="database lock")
    assert operator.post(url("recovery_retrypolicy_delete", builtin.pk), {"reason": "x"}).status_code == 403
    operator.post(
        url("recovery_retrypolicy_changelist"),
        {
            "action": "delete_with_reason",
            "_selected_action": [builtin.pk],
            CONFIRMED: "yes",
            "reason": "tidy",
        },
    )
    assert RetryPolicy.objects.filter(pk=builtin.pk).exists()
    assert audit("retry_policy.delete") == []


def test_it_adds_and_deletes_a_service_policy_with_reasons(operator: Client, svc: Service) -> None:
    new = RetryPolicy(name="svc search", service=svc, operation="search", strategy="linear", max_attempts=2)
    data = policy_form(new, retry_on=["transient", "internal"], audit_reason="search is flaky")

    assert operator.post(url("recovery_retrypolicy_add"), data).status_code == 302

    policy = RetryPolicy.objects.get(name="svc search")
    assert (policy.service, policy.operation, policy.scope, policy.retry_on) == (
        svc,
        "search",
        "operation",
        ["transient", "internal"],
    )
    [created] = audit("retry_policy.create")
    assert (created.target_id, created.reason, created.before) == (str(policy.pk), "search is flaky", None)
    assert policies.resolve(svc, "search", "internal", "bug") == policy

    page = operator.post(url("recovery_retrypolicy_delete", policy.pk))
    assert page.status_code == 200  # asks why first
    done = operator.post(url("recovery_retrypolicy_delete", policy.pk), {"reason": "fixed upstream"})
    assert done.status_code == 302
    assert not RetryPolicy.objects.filter(pk=policy.pk).exists()
    [deleted] = audit("retry_policy.delete")
    assert (deleted.reason, deleted.before["name"]) == ("fixed upstream", "svc search")  # type: ignore[index]


def test_it_refuses_an_invalid_policy_as_a_form_error(operator: Client) -> None:
    new = RetryPolicy(name="bad", max_attempts=2, base_delay_s=10, max_delay_s=1, error_class="internal")
    response = operator.post(url("recovery_retrypolicy_add"), policy_form(new, audit_reason="try"))
    assert response.status_code == 200
    assert not RetryPolicy.objects.filter(name="bad").exists()
    assert audit("retry_policy.create") == []


def test_it_adds_an_operation_with_a_reason(operator: Client, svc: Service) -> None:
    made = operator.post(
        url("recovery_operation_add"),
        {
            "service": svc.pk,
            "name": "charge",
            "critical": "on",
            "audit_reason": "payments are not idempotent",
        },
    )
    assert made.status_code == 302
    operation = Operation.objects.get()
    assert (operation.name, operation.idempotent, operation.critical) == ("charge", False, True)
    assert audit("operation.create")[0].reason == "payments are not idempotent"


def _add_service_fallback(operator: Client, svc: Service, backup: Service) -> Any:
    return operator.post(
        url("recovery_fallbackoption_add"),
        {
            "service": svc.pk,
            "operation": "charge",
            "position": 1,
            "kind": "service",
            "enabled": "on",
            "target_service": backup.pk,
            "audit_reason": "the backup processor",
        },
    )


def test_it_adds_a_fallback_to_another_service_with_a_reason(operator: Client, svc: Service) -> None:
    backup = Service.objects.create(name="backup")
    added = _add_service_fallback(operator, svc, backup)
    assert added.status_code == 302
    fallback = FallbackOption.objects.get()
    assert (fallback.kind, fallback.target_service, fallback.operation) == ("service", backup, "charge")
    [event] = audit("fallback_option.create")
    assert event.after["target_service"] == backup.pk  # type: ignore[index]


def test_it_refuses_a_fallback_looping_to_its_service_or_a_static_one_without_value(
    operator: Client, svc: Service
) -> None:
    _add_service_fallback(operator, svc, Service.objects.create(name="backup"))
    # A service option must lead somewhere else; a static one needs its value (a model constraint).
    looping = {
        "service": svc.pk,
        "operation": "charge",
        "position": 2,
        "kind": "service",
        "target_service": svc.pk,
    }
    assert (
        operator.post(url("recovery_fallbackoption_add"), {**looping, "audit_reason": "x"}).status_code == 200
    )
    valueless = {"service": svc.pk, "position": 3, "kind": "static", "audit_reason": "x"}
    assert operator.post(url("recovery_fallbackoption_add"), valueless).status_code == 200
    assert FallbackOption.objects.count() == 1


def test_it_deletes_a_fallback_with_a_reason(operator: Client, svc: Service) -> None:
    _add_service_fallback(operator, svc, Service.objects.create(name="backup"))
    fallback = FallbackOption.objects.get()
    gone = operator.post(url("recovery_fallbackoption_delete", fallback.pk), {"reason": "processor retired"})
    assert gone.status_code == 302
    assert not FallbackOption.objects.exists()
    assert audit("fallback_option.delete")[0].reason == "processor retired"


def test_it_shows_a_services_recovery_configuration_on_its_page(operator: Client, svc: Service) -> None:
    Operation.objects.create(service=svc, name="charge", idempotent=False)
    option(svc, 1, "static", static_value={"fallback": True})
    RetryPolicy.objects.create(
        name="svc policy", service=svc, strategy="fixed", max_attempts=3, max_delay_s=1
    )

    page = operator.get(url("recovery_service_change", svc.pk)).content.decode()

    assert "Fallback chain (edit it under Fallback options)" in page
    assert "charge" in page and "svc policy" in page and "1 s, 1 s" in page
    # The service's own form still posts without them: they are shown, never posted.
    data = {
        "kind": svc.kind,
        "criticality": "essential",
        "description": "",
        **{name: getattr(svc, name) for name in ["failure_rate_threshold", "window_type", "window_size"]},
        **{name: getattr(svc, name) for name in ["minimum_calls", "consecutive_failures", "slow_call_ms"]},
        **{
            name: getattr(svc, name)
            for name in ["wait_duration_s", "half_open_max_calls", "success_threshold"]
        },
        **{name: getattr(svc, name) for name in ["wait_multiplier", "max_wait_s"]},
        "transitions-TOTAL_FORMS": "0",
        "transitions-INITIAL_FORMS": "0",
        "audit_reason": "now essential",
    }
    assert operator.post(url("recovery_service_change", svc.pk), data).status_code == 302
    svc.refresh_from_db()
    assert svc.criticality == "essential"


def test_it_shows_plans_and_fallback_uses_read_only(
    operator: Client, agent_client: Any, svc: Service
) -> None:
    option(svc, 1, "static", static_value=0)
    body = {"service": "svc", "error": {"status_code": 400}}
    agent_client.post("/api/v1/recovery/plan", body, format="json")
    agent_client.post(
        "/api/v1/recovery/plan", {**body, "error": {"status_code": 503}, "attempt": 9}, format="json"
    )
    plan = RecoveryPlan.objects.get(action="fallback")
    invocation = FallbackInvocation.objects.get()
    pages = [
        url("recovery_recoveryplan_changelist"),
        url("recovery_recoveryplan_change", plan.pk),
        url("recovery_fallbackinvocation_changelist"),
        url("recovery_fallbackinvocation_change", invocation.pk),
        url("recovery_retrypolicy_changelist"),
        url("recovery_retrypolicy_add"),
        url("recovery_operation_changelist"),
        url("recovery_fallbackoption_changelist"),
    ]
    for page in pages:
        assert operator.get(page).status_code == 200, page
    assert (
        "What the planner saw" in operator.get(url("recovery_recoveryplan_change", plan.pk)).content.decode()
    )
    assert operator.post(url("recovery_recoveryplan_change", plan.pk), {"reason": "x"}).status_code == 403
    assert operator.post(url("recovery_recoveryplan_delete", plan.pk), {"post": "yes"}).status_code == 403
