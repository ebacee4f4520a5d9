from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError, CommandParser

from core.access import services as access
from core.access.models import Agent
from core.api.errors import DomainError
from core.audit.models import AuditEvent
from core.audit.services import Actor


class Command(BaseCommand):
    help = "Create an agent (or reuse one with --existing) and print a new API key as the last line."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name")
        parser.add_argument("--description", default="")
        parser.add_argument("--existing", action="store_true", help="Issue a key for an existing agent.")

    def handle(self, *args: object, name: str, description: str, existing: bool, **options: object) -> None:
        actor = Actor(source=AuditEvent.Source.CLI)
        try:
            agent = Agent.objects.filter(name=name).first() if existing else None
            if agent is None:
                agent = access.create_agent(name=name, description=description, actor=actor)
                self.stdout.write(f"Created agent {agent.name!r} (id {agent.pk}).")
            _, plaintext = access.issue_key(actor=actor, agent=agent, name="cli")
        except DomainError as error:
            raise CommandError(error.message) from error
        self.stdout.write(
            "The key is shown once; store it now. Agents send it as 'Authorization: Bearer <key>'."
        )
        self.stdout.write(plaintext)
