"""`manage.py intake_dead_letters list|show|replay|purge`: the buffered intake's dead letters, for an operator."""

from __future__ import annotations

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from recovery.errors import dead_letters, intake

USAGE = """
  list                      the oldest dead letters (--limit, 50 by default) and how many there are
  show --id ID              one dead letter: why it was set aside, and its reports as queued
  replay --id ID [--id ...] queue them again (or --all); the drain writes them, or sets them aside again
                            if the database still refuses them
  purge --id ID [--id ...]  delete them (or --all): their reports are lost
"""


class Command(BaseCommand):
    help = (
        "The buffered error intake's dead letters: reports the database refused for their content, kept in "
        f"the Redis stream {intake.DEAD}." + USAGE
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("action", choices=["list", "show", "replay", "purge"])
        parser.add_argument("--id", action="append", default=[], dest="ids", help="A dead letter's id.")
        parser.add_argument(
            "--all", action="store_true", dest="everything", help="Every dead letter (replay and purge)."
        )
        parser.add_argument("--limit", type=int, default=50, help="How many to list (list).")

    def handle(
        self, *args: object, action: str, ids: list[str], everything: bool, limit: int, **_: object
    ) -> None:
        if not _has_buffer():
            raise CommandError(
                "No Redis is configured here: the intake is synchronous and has no dead letters."
            )
        if action == "list":
            self._list(limit)
        elif action == "show":
            self._show(ids)
        else:
            chosen = _chosen(action, ids, everything)
            if action == "replay":
                moved = dead_letters.replay(chosen)
                self.stdout.write(
                    f"Replayed {moved} of {len(chosen)} dead letters into {intake.STREAM}; the drain writes "
                    "them (now: manage.py drain_intake)."
                )
            else:
                purged = dead_letters.purge(chosen)
                self.stdout.write(f"Purged {purged} of {len(chosen)} dead letters; their reports are gone.")

    def _list(self, limit: int) -> None:
        total = dead_letters.count()
        self.stdout.write(f"{total} dead letters in {intake.DEAD}" + (":" if total else "."))
        for letter in dead_letters.oldest(limit):
            reports = "?" if letter.reports is None else str(letter.reports)
            self.stdout.write(f"{letter.id}  {letter.at or '-'}  {reports} reports  {letter.error[:160]}")
        if total > limit:
            self.stdout.write(f"... and {total - limit} more (--limit).")

    def _show(self, ids: list[str]) -> None:
        if len(ids) != 1:
            raise CommandError("show takes exactly one --id.")
        letter = dead_letters.get(ids[0])
        if letter is None:
            raise CommandError(f"No dead letter {ids[0]} in {intake.DEAD}.")
        self.stdout.write(f"id:       {letter.id}\nqueued:   {letter.entry}\nat:       {letter.at}")
        self.stdout.write(f"error:    {letter.error}\nreports:  {letter.reports}\npayload:\n{letter.payload}")


def _chosen(action: str, ids: list[str], everything: bool) -> list[str]:
    if everything == bool(ids):
        raise CommandError(f"{action} takes --id (one or more) or --all, not both and not neither.")
    return dead_letters.all_ids() if everything else ids


def _has_buffer() -> bool:
    return bool(settings.REDIS_URL)
