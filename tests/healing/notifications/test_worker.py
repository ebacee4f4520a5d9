"""Notifications on a real Celery worker process, end to end: an escalation raised and committed sends its notice
through the receiver to the notify task, whose deliveries are sent by their own tasks through apprise to a real
HTTP receiver; a failing attempt is retried by the beat's pass once its backoff has passed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from django.test import override_settings

from healing.escalations.models import EscalationEvent
from healing.notifications import services
from healing.notifications.models import Delivery
from tests.support.factories import rebound_settings
from tests.support.http_target import Answer, running_target
from tests.support.notifications import channel, escalation
from tests.support.processes import PYTHON, process_env, start, stop, wait_for

pytestmark = [
    pytest.mark.slow,
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.django_db(transaction=True),
]
WORKER = [PYTHON, "-m", "celery", "-A", "config", "worker", "--pool", "solo", "-l", "INFO", "-n", "notify@%h"]


def test_an_escalation_is_delivered_by_a_real_worker(tmp_path: Path, notice_receiver: None) -> None:
    with (
        running_target() as target,
        override_settings(REBOUND=rebound_settings(OUTBOUND_ALLOWED_HOSTS=[target.host])),
    ):
        target.script(Answer(500, {"error": "try later"}))  # the first attempt fails, the retry gets through
        channel(target, "oncall", min_level="warning")
        log = tmp_path / "worker.log"
        env = process_env(tmp_path, OUTBOUND_ALLOWED_HOSTS=target.host, NOTIFICATION_RETRY_BASE_SECONDS="0.5")
        worker = start(WORKER, env, log)
        try:
            raised = escalation("payments-down", "critical", title="Payments API failing")

            def attempted() -> bool:
                return Delivery.objects.filter(escalation=raised, attempts__gte=1).exists()

            assert wait_for(attempted, timeout=60), log.read_text()[-3000:]

            def sent() -> bool:
                services.retry_due()  # what beat does every 10 s
                return Delivery.objects.filter(escalation=raised, status="sent").exists()

            assert wait_for(sent, timeout=30, interval=0.5), log.read_text()[-3000:]
            delivery = Delivery.objects.get(escalation=raised)
            assert (delivery.notice, delivery.level, delivery.attempts, delivery.error) == (
                1,
                "critical",
                2,
                "",
            )
            assert len(target.seen) == 2
            body: dict[str, Any] = json.loads(target.seen[-1].body)
            assert (body["title"], body["type"]) == ("[CRITICAL] Payments API failing", "failure")
            assert f"/api/v1/escalations/{raised.pk}" in body["message"]
            assert EscalationEvent.objects.filter(escalation=raised, kind="notified").count() == 1
        finally:
            stop(worker)
