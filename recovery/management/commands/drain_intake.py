from __future__ import annotations

import time

from django.core.management.base import BaseCommand, CommandParser

from recovery.errors import intake


class Command(BaseCommand):
    help = "Write the buffered error intake to the database now (what the drain_error_intake task does)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--budget", type=float, default=600.0, help="Seconds at most.")

    def handle(self, *args: object, budget: float, **options: object) -> None:
        if not intake.enabled():
            self.stdout.write(
                "Intake is synchronous here (INTAKE_MODE, or no Redis/PostgreSQL): nothing to drain."
            )
            return
        started = time.monotonic()
        written = intake.drain(budget_s=budget)
        self.stdout.write(f"Wrote {written} error events in {time.monotonic() - started:.3f} s.")
