from django.apps import AppConfig


class HealingConfig(AppConfig):
    """The human side (health checks, healing actions, escalations): built on recovery and core, never
    imported by them. Its audit trail moved to core.audit; the table and its trigger stayed."""

    name = "healing"
    verbose_name = "Humans in the loop"

    def ready(self) -> None:
        # The wiring between rooms that must not import each other: a lower room sends, a higher one listens.
        # Imported here, once the models are loaded, as Django asks of signal receivers.
        from healing.checks import selectors as check_selectors
        from healing.checks import signals as check_signals
        from healing.remediation import receivers as remediation_receivers
        from recovery.breakers import signals as breaker_signals
        from recovery.status.selectors import register_health_source

        # GET /api/v1/status shows each service's health (recovery never imports healing).
        register_health_source(check_selectors.service_health)

        check_signals.state_changed.connect(
            remediation_receivers.on_check_state_changed, dispatch_uid=remediation_receivers.CHECKS_UID
        )
        breaker_signals.transitions_committed.connect(
            remediation_receivers.on_breaker_transitions, dispatch_uid=remediation_receivers.BREAKERS_UID
        )
