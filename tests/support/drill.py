"""What the drill's report, plot and command tests share (no tests here): hand-made RunData to report on, and
for the slow smoke test a real production-mode Rebound (gunicorn and a Celery worker with beat) on the test
database and the test Redis, with an agent key and an operator key to drive it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group

from core.access import services as access
from core.access.roles import OPERATORS, REVIEWERS
from core.audit.models import AuditEvent
from core.audit.services import Actor
from drill.records import CallRecord, EscalationSeen, Fleet, Outage, PlanSeen, RunData, TaskRecord, TaskStatus
from tests.support.processes import PYTHON, free_port, process_env, start, stop, wait_for, wait_http

# --- hand-made runs ---------------------------------------------------------------------------------------


def task(
    fleet: Fleet,
    number: int,
    status: TaskStatus = "completed",
    *,
    steps: tuple[str, ...] = ("search",),
    permanent: bool = False,
    started_s: float | None = 1.0,
    ended_s: float | None = 3.0,
    partial: bool = False,
    plans: tuple[PlanSeen, ...] = (),
) -> TaskRecord:
    return TaskRecord(
        fleet=fleet,
        agent=0,
        task_id=f"t0-{number}",
        steps=steps,
        permanent=permanent,
        status=status,
        started_s=started_s,
        ended_s=ended_s,
        partial=partial,
        plans=plans,
    )


def call(fleet: Fleet, service: str, t_s: float, ok: bool = True, *, down: bool = False) -> CallRecord:
    status = None if down else (200 if ok else 503)
    return CallRecord(fleet=fleet, service=service, t_s=t_s, ok=ok, status=status, down=down)


def plan(action: str, *, learned: bool = False, service: str = "search") -> PlanSeen:
    return PlanSeen(plan_id=f"p-{action}-{learned}", service=service, action=action, learned=learned)


def escalation(service: str, number: int = 1) -> EscalationSeen:
    return EscalationSeen(
        escalation_id=f"e{number}",
        service=service,
        dedup_key=f"auth:{service}",
        level="page",
        state="open",
        title=f"{service} refuses our credentials",
        occurrences=1,
    )


def run_data(
    tasks: list[TaskRecord] | None = None,
    calls: list[CallRecord] | None = None,
    escalations: list[EscalationSeen] | None = None,
    *,
    outages: tuple[Outage, ...] = (Outage("payments", 10.0, 30.0),),
    notes: list[str] | None = None,
) -> RunData:
    return RunData(
        scenario="smoke",
        seed=1234,
        t0=1_750_000_000.0,
        duration_s=40.0,
        ended_s=50.0,
        agents_per_fleet=2,
        services=("search", "payments", "payments-replica", "legacy"),
        permanent_services=("legacy",),
        outages=outages,
        tasks=tasks or [],
        calls=calls or [],
        escalations=escalations or [],
        notes=notes or [],
    )


def good_run() -> RunData:
    """A run where Rebound meets every goal and the naive fleet does not: 4 recoverable tasks and one
    permanent one per fleet, an outage of `payments` from 10 s to 30 s."""
    tasks = [
        *(task("rebound", n, plans=(plan("fallback"),)) for n in range(4)),
        task("rebound", 4, "escalated", steps=("legacy",), permanent=True, plans=(plan("escalate"),)),
        task("naive", 0),
        task("naive", 1),
        task("naive", 2, "failed", ended_s=None),
        task("naive", 3, "failed", ended_s=None),
        task("naive", 4, "failed", steps=("legacy",), permanent=True),
    ]
    calls = [
        call("rebound", "payments", 11.0, False, down=True),
        call("rebound", "payments", 31.5),
        *(call("naive", "payments", 10.0 + n, False, down=True) for n in range(20)),
        call("naive", "payments", 34.0),
        call("rebound", "search", 2.0),
    ]
    return run_data(tasks, calls, [escalation("legacy")])


# --- a real Rebound for the smoke drill -------------------------------------------------------------------


@dataclass(frozen=True)
class LiveRebound:
    url: str
    agent_key: str
    operator_key: str
    env: dict[str, str]


def drill_keys(suffix: str = "") -> tuple[str, str]:
    """An agent key, and the key of a user in operators and reviewers (the drill's setup and queue reads), in
    the test database (the test must be transactional so that the server's processes see them)."""
    cli = Actor(source=AuditEvent.Source.CLI)
    agent = access.create_agent(name=f"drill-fleet{suffix}", actor=cli)
    _, agent_key = access.issue_key(actor=cli, agent=agent, name="drill")
    user = get_user_model().objects.create_user(f"drill-operator{suffix}", is_staff=True)
    user.groups.add(*Group.objects.filter(name__in=(OPERATORS, REVIEWERS)))
    _, operator_key = access.issue_key(actor=Actor(user=user, source=AuditEvent.Source.CLI), user=user)
    return agent_key, operator_key


@contextmanager
def live_rebound(tmp_path: Path, **settings: Any) -> Iterator[LiveRebound]:
    """gunicorn and a Celery worker with beat in production mode on the test database and Redis, like the drill's
    dev server but smaller (20 threads are plenty for the smoke fleets' calls and long-polls, and each holds a
    database connection of a PostgreSQL other test runs share), outbound calls to the loopback server allowed;
    each stopped at the end."""
    port = free_port()
    env = process_env(
        tmp_path,
        GUNICORN_BIND=f"127.0.0.1:{port}",
        GUNICORN_WORKERS="2",
        GUNICORN_THREADS="10",
        INTAKE_REQUIRE_DURABLE_REDIS="false",  # the machine's Redis keeps nothing on disk
        OUTBOUND_ALLOWED_HOSTS="127.0.0.1",
        **{k: str(v) for k, v in settings.items()},
    )
    agent_key, operator_key = drill_keys()
    web = start(
        [PYTHON, "-m", "gunicorn", "-c", "config/gunicorn.conf.py", "config.wsgi"], env, tmp_path / "web.log"
    )
    worker_log = tmp_path / "worker.log"
    worker = start(
        [
            PYTHON,
            "-m",
            "celery",
            "-A",
            "config",
            "worker",
            "-B",
            "-l",
            "INFO",
            "--concurrency",
            "2",
            "-s",
            str(tmp_path / "beat-schedule"),
        ],
        env,
        worker_log,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/healthz", timeout=60)
        assert wait_for(lambda: " ready." in worker_log.read_text(), timeout=60), worker_log.read_text()[
            -3000:
        ]
        yield LiveRebound(url=url, agent_key=agent_key, operator_key=operator_key, env=env)
    finally:
        stop(worker)
        stop(web)
