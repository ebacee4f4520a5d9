"""`python manage.py drill`: run a chaos-drill scenario against a running Rebound (drill/runner.py), then print
the report of both fleets and the goals, and write it as markdown, a PNG and JSON when asked (drill/report.py,
drill/plot.py). Exits 1 when a correctness goal is missed, 2 on a usage error or an unreachable Rebound."""

from __future__ import annotations

import json
import logging
import os
import shlex
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand, CommandError, CommandParser

from core.access import services as access
from core.access.models import Agent, ApiKey
from core.access.roles import OPERATORS, REVIEWERS
from core.audit import services as audit
from core.audit.models import AuditEvent
from core.audit.services import Actor
from drill import plot, report
from drill.records import RunData
from drill.runner import DrillError, Target, run
from drill.scenario import Scenario, ScenarioError, load

DEFAULT_URL = "http://127.0.0.1:8000"  # the local Rebound of `make run`
AGENT_NAME = "drill-fleet"
USER_NAME = "drill"
MAX_RUNS = 5
USAGE = 2  # the exit code of a usage error or an unreachable Rebound
PROBE_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class LocalKeys:
    """The keys local mode minted for this run (revoked when it ends: a drill leaves no live key behind)."""

    agent_key: str
    operator_key: str
    issued: tuple[ApiKey, ...]


def mint_local_keys() -> LocalKeys:
    """The agent `drill-fleet` and the user `drill` (operators and reviewers: it sets the services up and reads
    the escalation queue), each with a new key; made once and reused by later runs. Audited, source cli."""
    actor = Actor(source=AuditEvent.Source.CLI)
    reason = "chaos drill (manage.py drill, local mode)"
    agent = Agent.objects.filter(name=AGENT_NAME).first() or access.create_agent(
        name=AGENT_NAME, description="The chaos drill's rebound fleet", actor=actor, reason=reason
    )
    user, created = get_user_model().objects.get_or_create(username=USER_NAME)
    if created:
        user.set_unusable_password()  # it acts through its key only
        user.save(update_fields=["password"])
        audit.record(actor, "user.create", user, reason=reason, after={"username": USER_NAME})
    groups = [Group.objects.get(name=name) for name in (OPERATORS, REVIEWERS)]
    missing = [g for g in groups if not user.groups.filter(pk=g.pk).exists()]
    if missing:
        user.groups.add(*missing)
        audit.record(actor, "user.groups", user, reason=reason, after={"added": [g.name for g in missing]})
    agent_row, agent_key = access.issue_key(actor=actor, agent=agent, name="drill", reason=reason)
    user_actor = Actor(user=user, source=AuditEvent.Source.CLI)
    user_row, operator_key = access.issue_key(actor=user_actor, user=user, name="drill", reason=reason)
    return LocalKeys(agent_key=agent_key, operator_key=operator_key, issued=(agent_row, user_row))


def revoke_local_keys(keys: LocalKeys) -> None:
    actor = Actor(source=AuditEvent.Source.CLI)
    for row in keys.issued:
        access.revoke_key(api_key=row, actor=actor, reason="chaos drill ended: its keys are not kept")


def check_reachable(url: str) -> None:
    """A clear line (exit 2) rather than a traceback when nothing answers at `url`."""
    try:
        answer = httpx.get(f"{url}/healthz", timeout=PROBE_TIMEOUT_S)
    except httpx.HTTPError as error:
        raise CommandError(
            f"Rebound does not answer at {url} ({type(error).__name__}: {error}); start it (make run) or "
            "point --url at a running one.",
            returncode=USAGE,
        ) from error
    if answer.status_code != 200:
        raise CommandError(
            f"Rebound at {url} is not healthy: /healthz answered {answer.status_code}.", returncode=USAGE
        )


def repeat_command(scenario: str, seed: int, runs: int, keep_learning: bool) -> str:
    """The command that repeats this drill exactly (the faults are drawn from the seed)."""
    words = ["python", "manage.py", "drill", "--scenario", scenario, "--seed", str(seed)]
    if runs > 1:
        words += ["--runs", str(runs)]
    if keep_learning:
        words.append("--keep-learning")
    return shlex.join(words)


def write_outputs(
    built: report.Report,
    results: list[RunData],
    *,
    json_path: Path | None,
    report_path: Path | None,
    plot_path: Path | None,
) -> None:
    if plot_path is not None:
        plot.write(results, plot_path)
    if report_path is not None:
        link = None
        if plot_path is not None:
            link = Path(os.path.relpath(plot_path.resolve(), report_path.resolve().parent)).as_posix()
        report_path.parent.mkdir(parents=True, exist_ok=True)
        report_path.write_text(report.markdown(built, link), encoding="utf-8")
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(report.to_json(built), indent=2) + "\n", encoding="utf-8")


def _runs(value: str) -> int:
    try:
        count = int(value)
    except ValueError:
        count = 0
    if not 1 <= count <= MAX_RUNS:
        raise CommandError(f"--runs: {value!r} is not a number of runs (1 to {MAX_RUNS}).", returncode=USAGE)
    return count


def _seed(value: str) -> int:
    try:
        seed = int(value)
    except ValueError:
        seed = -1
    if seed < 0:
        raise CommandError(f"--seed: {value!r} is not a seed (a whole number, 0 or more).", returncode=USAGE)
    return seed


class Command(BaseCommand):
    help = (
        "Run the chaos drill: a fault-injecting loopback server, a fleet of agents recovering through Rebound "
        "and a fleet of naive retries against identical faults; print both side by side and whether the goals "
        "are met. Without --api-key it mints keys in this process's database (the local Rebound's). Exits 1 "
        "when a correctness goal is missed, 2 on a usage error or when Rebound does not answer."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--scenario", default="smoke", help="a shipped scenario's name or a YAML/JSON file"
        )
        parser.add_argument(
            "--seed", type=_seed, default=None, help="the faults' seed (default: the scenario's)"
        )
        parser.add_argument("--url", default=DEFAULT_URL, help=f"Rebound's base URL (default {DEFAULT_URL})")
        parser.add_argument("--api-key", default=None, help="the rebound fleet's agent key")
        parser.add_argument("--operator-key", default=None, help="a key of an operator and reviewer (setup)")
        parser.add_argument("--json", dest="json_path", type=Path, default=None, help="also write the JSON")
        parser.add_argument(
            "--report", dest="report_path", type=Path, default=None, help="write the markdown"
        )
        parser.add_argument("--plot", dest="plot_path", type=Path, default=None, help="write the PNG")
        parser.add_argument(
            "--runs", type=_runs, default=1, help="run it N times (2: see what learning changed)"
        )
        parser.add_argument(
            "--keep-learning", action="store_true", help="do not forget what was learned before the first run"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        # The runner's hundreds of requests to Rebound and the loopback server are not the report: httpx logs
        # each at INFO.
        logging.getLogger("httpx").setLevel(logging.WARNING)
        chosen = self._scenario(str(options["scenario"]))
        seed: int = options["seed"] if options["seed"] is not None else chosen.seed
        runs: int = options["runs"]
        keep_learning: bool = options["keep_learning"]
        url = str(options["url"]).rstrip("/")
        api_key, operator_key = options["api_key"], options["operator_key"]
        if api_key is None and operator_key is not None:
            raise CommandError(
                "--operator-key needs --api-key (without both, keys are minted).", returncode=USAGE
            )
        check_reachable(url)
        self._say(f"seed {seed}: repeat with --seed {seed}")
        keys = None
        if api_key is None:
            keys = mint_local_keys()
            api_key, operator_key = keys.agent_key, keys.operator_key
            self._say(
                f"local mode: minted keys for the agent {AGENT_NAME!r} and the user {USER_NAME!r} (operators, "
                "reviewers) in this process's database; they are revoked when the drill ends"
            )
        target = Target(url=url, agent_key=api_key, operator_key=operator_key)
        workdir = Path(tempfile.mkdtemp(prefix="rebound-drill-"))
        try:
            results = self._run_all(chosen, target, seed, runs, keep_learning, workdir)
        except BaseException:
            shutil.rmtree(workdir, ignore_errors=True)
            raise
        finally:
            if keys is not None:
                revoke_local_keys(keys)
        built = report.build(results, repeat_command(str(options["scenario"]), seed, runs, keep_learning))
        self.stdout.write(report.text(built), ending="")
        write_outputs(
            built,
            results,
            json_path=options["json_path"],
            report_path=options["report_path"],
            plot_path=options["plot_path"],
        )
        missed = report.missed_correctness(built)
        kept = bool(missed) and workdir.is_dir() and any(workdir.iterdir())
        if not kept:
            shutil.rmtree(workdir, ignore_errors=True)
        if missed:
            # The agents' files stay for a post-mortem when the drill failed.
            where = f" (the agents' files are in {workdir})" if kept else ""
            raise CommandError(f"correctness goals missed: {', '.join(missed)}{where}", returncode=1)

    def _scenario(self, name: str) -> Scenario:
        try:
            return load(name)
        except ScenarioError as error:
            raise CommandError(f"scenario {error}", returncode=USAGE) from error

    def _run_all(
        self, scenario: Scenario, target: Target, seed: int, runs: int, keep_learning: bool, workdir: Path
    ) -> list[RunData]:
        results: list[RunData] = []
        for index in range(1, runs + 1):
            # The first run starts from nothing learned (unless told to keep it), the next ones from what the
            # runs before them taught Rebound: that is the learning effect the report measures.
            fresh = index == 1 and not keep_learning
            if runs > 1:
                self._say(
                    f"run {index} of {runs} ({'learning forgotten' if fresh else 'with what was learned'})"
                )
            try:
                results.append(
                    run(
                        scenario,
                        target,
                        seed=seed,
                        workdir=workdir / f"run{index}",
                        say=self._say,
                        fresh_learning=fresh,
                    )
                )
            except DrillError as error:
                raise CommandError(str(error), returncode=USAGE) from error
            except KeyboardInterrupt as error:
                raise CommandError(
                    "interrupted; every process the drill started was stopped", returncode=130
                ) from error
        return results

    def _say(self, line: str) -> None:
        self.stdout.write(line)
        self.stdout.flush()
