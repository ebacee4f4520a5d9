"""A Celery app for the slow tests' worker processes (`celery -A tests.support.escalation_worker worker`): the
project's app, with the escalation queue's event triggers connected (tests/support/escalation_receivers.py) as
healing/apps.py connects them, by the same dispatch_uids. Django is set up first, as the receivers read models."""

from __future__ import annotations

import django

from config.celery import app

django.setup()

from tests.support.escalation_receivers import connect  # noqa: E402  (needs the apps loaded)

connect()

__all__ = ["app"]
