from collections.abc import Callable

from django.apps import AppConfig
from django.dispatch import Signal


class HealingConfig(AppConfig):
    """The human side (health checks, healing actions, escalations): built on recovery and core, never
    imported by them. Its audit trail moved to core.audit; the table and its trigger stayed."""

    name = "healing"
    verbose_name = "Humans in the loop"

    def ready(self) -> None:
        # The wiring between rooms that must not import each other: a lower room sends, a higher one listens.
        # Imported here, once the models are loaded, as Django asks of signal receivers.
        from django.db.models.signals import post_delete, post_save

        from core.infra import caches
        from healing.actions import signals as action_signals
        from healing.checks import selectors as check_selectors
        from healing.checks import signals as check_signals
        from healing.escalations import error_triggers, event_triggers
        from healing.escalations import selectors as escalation_selectors
        from healing.escalations import signals as escalation_signals
        from healing.escalations.models import EscalationTrigger
        from healing.notifications import receivers as notification_receivers
        from healing.remediation import receivers as remediation_receivers
        from recovery.breakers import signals as breaker_signals
        from recovery.checkpoints import signals as checkpoint_signals
        from recovery.decisions import signals as decision_signals
        from recovery.errors import signals as error_signals
        from recovery.retries import signals as retry_signals
        from recovery.sagas import signals as saga_signals
        from recovery.status.selectors import register_health_source

        # GET /api/v1/status shows each service's health (recovery never imports healing).
        register_health_source(check_selectors.service_health)

        check_signals.state_changed.connect(
            remediation_receivers.on_check_state_changed, dispatch_uid=remediation_receivers.CHECKS_UID
        )
        breaker_signals.transitions_committed.connect(
            remediation_receivers.on_breaker_transitions, dispatch_uid=remediation_receivers.BREAKERS_UID
        )

        # The escalation triggers: each fires from the event that causes it (healing/escalations).
        connections: list[tuple[Signal, Callable[..., None], str]] = [
            (error_signals.errors_stored, error_triggers.on_errors_stored, error_triggers.ERRORS_UID),
            (breaker_signals.outcomes_recorded, error_triggers.on_outcomes, error_triggers.OUTCOMES_UID),
            (decision_signals.plan_decided, event_triggers.on_plan_decided, event_triggers.PLANS_UID),
            (retry_signals.job_finished, event_triggers.on_job_finished, event_triggers.JOBS_UID),
            (
                saga_signals.transaction_ended,
                event_triggers.on_transaction_ended,
                event_triggers.TRANSACTIONS_UID,
            ),
            (
                checkpoint_signals.tasks_went_stale,
                event_triggers.on_tasks_went_stale,
                event_triggers.STALE_TASKS_UID,
            ),
            (
                breaker_signals.transitions_committed,
                event_triggers.on_breaker_transitions,
                event_triggers.BREAKERS_UID,
            ),
            (check_signals.state_changed, event_triggers.on_check_state_changed, event_triggers.CHECKS_UID),
            (action_signals.run_changed, event_triggers.on_run_changed, event_triggers.RUNS_UID),
            (action_signals.hold_placed, event_triggers.on_hold_placed, event_triggers.HOLDS_UID),
            # An escalation that must be told (raised, level rose, reopened) is sent to its channels.
            (
                escalation_signals.notice_due,
                notification_receivers.on_notice_due,
                notification_receivers.NOTICE_UID,
            ),
        ]
        for signal, receiver, uid in connections:
            signal.connect(receiver, dispatch_uid=uid)
        # Per-process memory of the triggers (recent raises, rate reads, the triggers' rows), dropped with the
        # other caches (tests, and a settings change).
        caches.register(error_triggers.forget, escalation_selectors.clear_trigger_cache)
        # A trigger edited (admin) is in force at once in this process, within seconds in the others.
        for model_signal, uid in (
            (post_save, "escalation-triggers-saved"),
            (post_delete, "escalation-triggers-deleted"),
        ):
            model_signal.connect(
                escalation_selectors.on_trigger_change, sender=EscalationTrigger, dispatch_uid=uid
            )
