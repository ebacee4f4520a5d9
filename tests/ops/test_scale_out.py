"""Several of everything at once (issue 18, section 3): three gunicorn processes (each its own port), two Celery
workers and two beats in production mode on this run's PostgreSQL database and Redis db, under a mixed load of
error reports, breaker outcomes, server-side retries, health checks, escalations with a notification channel and
an operator's healing runs (low-risk webhook actions, no approval), all against a local outside world
(tests/support/scale_out.py). Then every count is exact, no retry ran an attempt twice, no notification was sent
twice, every healing run executed once (one start, one webhook call, succeeded), and no periodic entry was sent
twice for one tick."""

from __future__ import annotations

import re
import threading
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.conf import settings
from django.db.models import Sum
from django.test import override_settings

from core.audit.services import Actor
from core.schedule.beat import CRONTAB_PERIOD
from core.schedule.models import PeriodicClaim
from healing.actions.models import HealingAction, HealingRun
from healing.checks.models import HealthCheckResult
from healing.escalations.models import Escalation
from healing.notifications import services as notifications
from healing.notifications.models import Delivery
from recovery.breakers import traffic
from recovery.breakers.models import Service
from recovery.decisions.models import RetryPolicy
from recovery.errors.models import ErrorEvent, ErrorPattern
from recovery.retries.models import RetryAttempt, RetryJob
from tests.support.drill import drill_keys
from tests.support.factories import rebound_settings
from tests.support.health_checks import make_check
from tests.support.processes import wait_for
from tests.support.scale_out import World, cluster, running_world

pytestmark = [
    pytest.mark.slow,
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.django_db(transaction=True),
]

LOAD_S = 50.0
HOT_THREADS = 3
RETRY_EVERY_S = 1.5
ESCALATE_EVERY = 3  # retries
CHECKS = ("alpha", "beta")
CHECK_INTERVAL_S = 2.0
ERROR_KINDS = 3
HEALS = 8
HEAL_EVERY_S = 5.0
EXECUTE_RUN = "healing.actions.tasks.execute_run"


class Load:
    """The mixed load, spread over the web processes; tallies what each endpoint answered."""

    def __init__(self, urls: list[str], agent_key: str, operator_key: str, world: World) -> None:
        self.urls = urls
        self.headers = {"Authorization": f"Bearer {agent_key}"}
        self.operator_headers = {"Authorization": f"Bearer {operator_key}"}
        self.world = world
        self.answers: Counter[tuple[str, int]] = Counter()
        self.retry_ids: list[str] = []
        self.escalation_titles: list[str] = []
        self.heal_runs: dict[int, int] = {}  # the action's number -> the run's id
        self.lock = threading.Lock()
        self.stop_at = 0.0

    def _post(self, client: httpx.Client, n: int, path: str, body: Any) -> httpx.Response | None:
        try:
            response = client.post(f"{self.urls[n % len(self.urls)]}/api/v1/{path}", json=body, timeout=30)
        except httpx.HTTPError as error:
            with self.lock:
                self.answers[(path, -1)] += 1
                self.answers[(f"{path}: {type(error).__name__}", -1)] += 1
            return None
        with self.lock:
            self.answers[(path, response.status_code)] += 1
        return response

    def hot(self, thread: int) -> None:
        """Error reports and outcomes, alternately, as fast as the servers answer."""
        with httpx.Client(headers=self.headers) as client:
            n = thread
            while time.monotonic() < self.stop_at:
                if n % 2:
                    kind = n % ERROR_KINDS
                    error = {
                        "service": "scale-errors",
                        "operation": "op",
                        "type": f"Kind{kind}Error",
                        "message": f"kind {kind} went wrong",
                        "status_code": 500,
                    }
                    self._post(client, n, "errors", error)
                else:
                    outcome = {
                        "service": "scale-breaker",
                        "operation": "op",
                        "success": True,
                        "duration_ms": 5,
                    }
                    self._post(client, n, "outcomes", outcome)
                n += HOT_THREADS

    def slow(self) -> None:
        """A retry every RETRY_EVERY_S, and every ESCALATE_EVERY retries an escalation."""
        with httpx.Client(headers=self.headers) as client:
            n = 0
            while time.monotonic() < self.stop_at:
                retry = {
                    "service": "scale-billing",
                    "operation": "charge",
                    "kind": "http",
                    "request": {"method": "POST", "url": self.world.url(f"/retry/{n}"), "body": {"n": n}},
                    "idempotency_key": f"scale-{n}",
                    "policy": "scale-quick",
                }
                response = self._post(client, n, "retries", retry)
                if response is not None and response.status_code == 201:
                    self.retry_ids.append(response.json()["id"])
                if n % ESCALATE_EVERY == 0:
                    title = f"scale-out escalation {n}"
                    escalation = {
                        "level": "critical",
                        "title": title,
                        "dedup_key": f"scale-{n}",
                        "service": "scale-esc",
                    }
                    response = self._post(client, n + 1, "escalations", escalation)
                    if response is not None and response.status_code == 201:
                        self.escalation_titles.append(title)
                n += 1
                time.sleep(RETRY_EVERY_S)

    def heal(self) -> None:
        """An operator asks for a run of action scale-heal-<n> every HEAL_EVERY_S, HEALS in all."""
        with httpx.Client(headers=self.operator_headers) as client:
            for n in range(HEALS):
                if time.monotonic() >= self.stop_at:
                    break
                run = {"action": f"scale-heal-{n}", "service": "scale-heal", "reason": f"scale-out heal {n}"}
                response = self._post(client, n, "healing/runs", run)
                if response is not None and response.status_code == 201:
                    self.heal_runs[n] = response.json()["id"]
                time.sleep(HEAL_EVERY_S)

    def run(self, seconds: float) -> None:
        self.stop_at = time.monotonic() + seconds
        threads = [threading.Thread(target=self.hot, args=(i,)) for i in range(HOT_THREADS)]
        threads.append(threading.Thread(target=self.slow))
        threads.append(threading.Thread(target=self.heal))
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()


def _task_ids(log: str, task: str) -> list[str]:
    return re.findall(rf"{re.escape(task)}\[([0-9a-f-]+)\] received", log)


def test_three_webs_two_workers_two_beats_count_everything_once(tmp_path: Path) -> None:
    began = time.monotonic()
    agent_key, operator_key = drill_keys("-scale")
    Service.objects.create(name="scale-breaker", window_type="time", window_size=3600, consecutive_failures=0)
    # Half of the retries' calls fail (each job's first attempt): neither the breaker nor the budget may stop them.
    billing = Service.objects.create(
        name="scale-billing",
        failure_rate_threshold=100,
        consecutive_failures=0,
        retry_budget_percent=100,
        retry_budget_min_retries=10_000,
    )
    RetryPolicy.objects.create(
        name="scale-quick",
        service=billing,
        strategy="fixed",
        max_attempts=3,
        base_delay_s=0.2,
        max_delay_s=0.2,
    )
    with (
        running_world() as world,
        override_settings(REBOUND=rebound_settings(OUTBOUND_ALLOWED_HOSTS=[world.host])),
    ):
        checks = [
            make_check(
                name,
                kind="http",
                service="scale-checks",
                url=world.url(f"/health/{name}"),
                interval_s=CHECK_INTERVAL_S,
                timeout_s=2,
            )
            for name in CHECKS
        ]
        hook = {"name": "scale-oncall", "url": f"json://{world.host}/hook", "min_level": "warning"}
        notifications.create_channel(data=hook, actor=Actor(), reason="scale-out test")
        for n in range(HEALS):
            HealingAction.objects.create(
                name=f"scale-heal-{n}",
                kind=HealingAction.Kind.WEBHOOK,
                risk="low",
                cooldown_s=0,
                max_runs_per_hour=100,
                timeout_s=5,
                url=world.url(f"/heal/{n}"),
                method="POST",
                body_template={"service": "{{service}}", "run": "{{run_id}}"},
            )
        with cluster(tmp_path, world.host) as live:
            started = time.monotonic() - began
            load = Load(live.urls, agent_key, operator_key, world)
            load.run(LOAD_S)

            # Everything sent gets done: the intake drained, the retries finished, the notices delivered.
            accepted_errors = load.answers[("errors", 201)]
            accepted_outcomes = load.answers[("outcomes", 200)]

            def drained() -> bool:
                return ErrorEvent.objects.filter(service="scale-errors").count() >= accepted_errors

            assert wait_for(drained, timeout=30), live.tail("worker0", "worker1")

            def retried() -> bool:
                return not RetryJob.objects.filter(pk__in=load.retry_ids, finished_at__isnull=True).exists()

            assert wait_for(retried, timeout=30), live.tail("worker0", "worker1")

            def notified() -> bool:
                delivered = Delivery.objects.filter(
                    escalation__title__in=load.escalation_titles, status="sent"
                )
                return delivered.count() >= len(load.escalation_titles)

            assert wait_for(notified, timeout=30), live.tail("worker0", "worker1")

            def healed() -> bool:
                runs = HealingRun.objects.filter(pk__in=load.heal_runs.values())
                return not runs.filter(finished_at__isnull=True).exists()

            assert wait_for(healed, timeout=30), live.tail("worker0", "worker1")

            # The beats stop; what they sent is consumed, the health checks' last runs recorded.
            live.stop("beat0", "beat1")
            beats_for = time.monotonic() - began  # at most this long (they started after `began`)
            time.sleep(3)

            def checks_settled() -> bool:
                return all(
                    HealthCheckResult.objects.filter(health_check=check).count()
                    == world.by_path[f"/health/{check.name}"]
                    for check in checks
                )

            assert wait_for(checks_settled, timeout=20), live.tail("worker0", "worker1")
            breaker = httpx.get(
                f"{live.urls[0]}/api/v1/breakers/scale-breaker",
                headers={"Authorization": f"Bearer {operator_key}"},
                timeout=10,
            )
            worker_logs = live.log("worker0") + live.log("worker1")
            # Both workers took their share of the retries' attempts.
            shares = [
                len(_task_ids(live.log(f"worker{i}"), "recovery.retry_tasks.run_retry_attempt"))
                for i in (0, 1)
            ]
            heal_shares = [len(_task_ids(live.log(f"worker{i}"), EXECUTE_RUN)) for i in (0, 1)]

    # --- what the load saw ---
    unexpected = {k: v for k, v in load.answers.items() if k[1] not in (200, 201)}
    claims = {c.name: c for c in PeriodicClaim.objects.all()}
    figures = {
        "startup_s": round(started, 1),
        "beats_ran_s": round(beats_for, 1),
        "answers": dict(load.answers),
        "retries": len(load.retry_ids),
        "attempts_per_worker": shares,
        "escalations": len(load.escalation_titles),
        "heal_runs": len(load.heal_runs),
        "heal_runs_per_worker": heal_shares,
        "check_runs": {c.name: world.by_path[f"/health/{c.name}"] for c in checks},
        "claims": {n: (c.sends, c.skips) for n, c in claims.items()},
    }
    print("\nscale-out figures:", figures)
    assert not unexpected, unexpected
    assert accepted_errors > 100 and accepted_outcomes > 100, figures

    # Error reports: one event per accepted report, the patterns' totals add up, nothing counted twice.
    assert ErrorEvent.objects.filter(service="scale-errors").count() == accepted_errors
    patterns = ErrorPattern.objects.filter(service="scale-errors")
    assert patterns.count() == ERROR_KINDS
    assert patterns.aggregate(total=Sum("total_count"))["total"] == accepted_errors

    # Outcomes: the breaker counted each call once (its window is the last hour), and so did the traffic counters.
    assert breaker.status_code == 200, breaker.text
    window = breaker.json()["window"]
    assert (window["calls"], window["failures"]) == (accepted_outcomes, 0)
    assert traffic.window("scale-breaker", 3600) == (accepted_outcomes, 0)

    # Retries: each job's attempts are what the target saw of its key, each attempt recorded once.
    jobs = list(RetryJob.objects.filter(pk__in=load.retry_ids))
    assert len(jobs) == len(load.retry_ids) > 10
    for job in jobs:
        assert (job.state, job.attempts) == ("succeeded", 2), (job.pk, job.state, job.attempts)
        assert world.by_key[job.idempotency_key] == job.attempts
        numbers = list(
            RetryAttempt.objects.filter(job=job).values_list("number", flat=True).order_by("number")
        )
        assert numbers == [1, 2]
    assert sum(world.by_key.values()) == 2 * len(jobs)
    assert all(shares), shares

    # Notifications: one delivery per escalation, sent on its first attempt, the hook called once for each.
    escalations = Escalation.objects.filter(title__in=load.escalation_titles)
    assert escalations.count() == len(load.escalation_titles) > 3
    deliveries = Delivery.objects.filter(escalation__in=escalations)
    assert sorted(deliveries.values_list("status", "attempts")) == [("sent", 1)] * escalations.count()
    hook_titles = Counter(body.get("title", "") for body in world.hook_bodies)
    for title in load.escalation_titles:
        assert hook_titles[f"[CRITICAL] {title}"] == 1, hook_titles
    assert world.by_path["/hook"] == Delivery.objects.filter(status="sent").count()

    # Healing runs: each asked for once, started once by one task, its webhook called once, succeeded.
    assert len(load.heal_runs) == HEALS, figures
    heal_tasks = _task_ids(worker_logs, EXECUTE_RUN)
    assert len(heal_tasks) == len(set(heal_tasks)) == HEALS, heal_tasks
    for n, run_id in load.heal_runs.items():
        run = HealingRun.objects.get(pk=run_id)
        assert (run.action.name, run.state) == (f"scale-heal-{n}", "succeeded"), (run.pk, run.state_reason)
        assert run.task_id in heal_tasks and run.started_at and run.finished_at
        states = list(run.transitions.order_by("created_at", "pk").values_list("to_state", flat=True))
        assert states == ["approved", "running", "succeeded"], (run.pk, states)
        assert world.by_path[f"/heal/{n}"] == 1, (n, world.by_path[f"/heal/{n}"])
        assert world.heal_keys[str(run.pk)] == 1, (run.pk, world.heal_keys)
    assert sum(world.heal_keys.values()) == HEALS, world.heal_keys

    # Health checks: each due run once (the target's count is the results' count), and they did run.
    for check in checks:
        runs = world.by_path[f"/health/{check.name}"]
        assert runs >= LOAD_S / CHECK_INTERVAL_S / 2, figures
        assert HealthCheckResult.objects.filter(health_check=check).count() == runs

    # Periodic entries: both beats were due, one sent each tick (never more than a tick a period), and each
    # message sent was received by one worker once.
    dispatch = claims["dispatch-health-checks"]
    assert dispatch.skips > 0, figures
    for name, claim in claims.items():
        period = _period(name)
        assert claim.sends <= beats_for / period + 2, (name, claim.sends, beats_for)
    received = _task_ids(worker_logs, "healing.checks.tasks.dispatch_due_checks")
    assert len(received) == len(set(received)) == dispatch.sends, (len(received), dispatch.sends)


def _period(name: str) -> float:
    """The entry's period in seconds: its interval, or the claim's period of a crontab entry."""
    entry = settings.CELERY_BEAT_SCHEDULE.get(name)
    every = entry["schedule"] if entry else CRONTAB_PERIOD
    assert isinstance(every, timedelta), (name, every)
    return every.total_seconds()
