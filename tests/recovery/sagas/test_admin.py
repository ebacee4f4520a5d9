"""The admin of transactions: steps and attempts read-only, "roll back" and "retry compensation" asking for a
reason and audited with source admin."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from core.admin_helpers import CONFIRMED
from core.audit.models import AuditEvent
from recovery.sagas.models import CompensationAttempt, Transaction, TransactionStep
from tests.support.admin_helpers import confirmed, url
from tests.support.admin_helpers import run_action as post_action
from tests.support.saga_fixtures import Target, http_step, open_txn

pytestmark = pytest.mark.django_db


def run_action(client: Client, action: str, pks: list[Any], **extra: str) -> Any:
    return post_action(client, "recovery_transaction_changelist", action, pks, **extra)


def failed_rollback(target: Target) -> tuple[Transaction, TransactionStep]:
    """A transaction whose rollback failed on its only step, as the workers leave it."""
    txn = open_txn(name="refund")
    step = http_step(txn, target, "k1", headers={"Authorization": "Bearer s3cret"})
    now = timezone.now()
    Transaction.objects.filter(pk=txn.pk).update(
        status="rollback_failed", rollback_reason="payment refused", needs_human=True, finished_at=now
    )
    last_error = {
        "attempt": 1,
        "error_class": "validation",
        "message": "HTTP 400 Bad Request",
        "retry_at": None,
    }
    TransactionStep.objects.filter(pk=step.pk).update(
        status="compensation_failed", attempts=1, last_error=last_error
    )
    CompensationAttempt.objects.create(
        step=step,
        number=1,
        outcome="failure",
        status_code=400,
        error_class="validation",
        error_type="HTTPStatusError",
        message="HTTP 400 Bad Request",
        started_at=now,
        finished_at=now,
    )
    txn.refresh_from_db()
    step.refresh_from_db()
    return txn, step


def test_it_lists_transactions_and_filters_those_needing_a_human(operator: Client, target: Target) -> None:
    failed_rollback(target)
    open_txn(name="booking")

    listing = operator.get(url("recovery_transaction_changelist"))
    assert listing.status_code == 200
    assert [t.name for t in listing.context["cl"].result_list] == ["booking", "refund"]
    assert "rollback failed" in listing.content.decode()
    filtered = operator.get(url("recovery_transaction_changelist"), {"needs_human__exact": "1"})
    assert [t.name for t in filtered.context["cl"].result_list] == ["refund"]


def test_it_shows_a_transactions_steps_with_their_attempts_to_operators_and_viewers(
    operator: Client, viewer: Client, target: Target
) -> None:
    txn, _ = failed_rollback(target)
    for client in (operator, viewer):
        page = client.get(url("recovery_transaction_change", txn.pk))
        assert page.status_code == 200
        body = page.content.decode()
        assert "k1" in body and "#1 failure · HTTP 400 · validation · HTTPStatusError" in body
        assert "payment refused" in body


def test_it_offers_retrying_a_compensation_to_operators_only(
    operator: Client, viewer: Client, target: Target
) -> None:
    txn, _ = failed_rollback(target)
    assert (
        'value="retry_compensation"'
        in operator.get(url("recovery_transaction_change", txn.pk)).content.decode()
    )
    assert (
        'value="roll_back"' not in operator.get(url("recovery_transaction_change", txn.pk)).content.decode()
    )
    assert (
        'value="retry_compensation"'
        not in viewer.get(url("recovery_transaction_change", txn.pk)).content.decode()
    )


def test_it_shows_a_step_with_its_secrets_redacted(operator: Client, target: Target) -> None:
    _, step = failed_rollback(target)
    step_page = operator.get(url("recovery_transactionstep_change", step.pk))
    assert step_page.status_code == 200
    body = step_page.content.decode()
    assert "[redacted]" in body and "s3cret" not in body
    assert "HTTP 400 Bad Request" in body


def test_it_rolls_back_with_a_reason_and_audits_it(operator: Client, target: Target) -> None:
    txn = open_txn(name="booking")
    committed = open_txn(name="done")
    Transaction.objects.filter(pk=committed.pk).update(status="committed")

    asked = run_action(operator, "roll_back", [txn.pk])
    assert asked.status_code == 200 and "Roll back" in asked.content.decode()
    txn.refresh_from_db()
    assert txn.status == "open"
    missing = run_action(operator, "roll_back", [txn.pk], **{CONFIRMED: "yes", "reason": ""})
    assert missing.status_code == 200 and "This field is required" in missing.content.decode()

    done = run_action(operator, "roll_back", [txn.pk, committed.pk], **confirmed("customer cancelled"))

    assert done.status_code == 302
    txn.refresh_from_db()
    assert txn.status == "rolling_back" and txn.rollback_reason == "customer cancelled" and txn.fence
    committed.refresh_from_db()
    assert committed.status == "committed"
    event = AuditEvent.objects.get(action="transaction.rollback")
    assert (event.target_id, event.reason, event.source) == (str(txn.pk), "customer cancelled", "admin")
    assert event.actor_user == operator.user  # type: ignore[attr-defined]


def test_it_retries_a_failed_compensation_with_a_reason_and_audits_it(
    operator: Client,
    target: Target,
) -> None:
    txn, step = failed_rollback(target)

    done = run_action(operator, "retry_compensation", [txn.pk], **confirmed("the refund API is fixed"))

    assert done.status_code == 302
    txn.refresh_from_db()
    assert txn.status == "rolling_back" and txn.needs_human is False and txn.finished_at is None
    step.refresh_from_db()
    assert step.status == "done" and step.attempts == 0 and step.fence == txn.fence
    assert step.attempt_rows.count() == 1  # the history stays
    event = AuditEvent.objects.get(action="transaction.retry_compensation")
    assert (event.reason, event.source) == ("the refund API is fixed", "admin")
    assert event.actor_user == operator.user  # type: ignore[attr-defined]
    assert event.after == {"status": "rolling_back", "needs_human": False}


def test_it_lets_no_viewer_act(viewer: Client, target: Target) -> None:
    txn, _ = failed_rollback(target)
    response = run_action(viewer, "retry_compensation", [txn.pk], **confirmed("why not"))
    assert response.status_code == 200  # the list again: the action is not one a viewer is offered
    listing = viewer.get(url("recovery_transaction_changelist")).content.decode()
    assert 'value="retry_compensation"' not in listing and 'value="roll_back"' not in listing
    txn.refresh_from_db()
    assert txn.status == "rollback_failed"
    assert not AuditEvent.objects.filter(action__startswith="transaction.").exists()
