from __future__ import annotations

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from core.access import services as access
from core.audit.models import AuditEvent
from core.audit.services import Actor


class Command(BaseCommand):
    help = "Issue a personal API key for a user (it acts with that user's permissions); the key is the last line."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--name", default="script")

    def handle(self, *args: object, username: str, name: str, **options: object) -> None:
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"No user named {username!r}.")
        _, plaintext = access.issue_key(
            actor=Actor(user=user, source=AuditEvent.Source.CLI), user=user, name=name
        )
        self.stdout.write(f"Key for user {username!r}; shown once, store it now.")
        self.stdout.write(plaintext)
