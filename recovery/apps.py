from django.apps import AppConfig


class RecoveryConfig(AppConfig):
    name = "recovery"
    verbose_name = "Recovery"

    def ready(self) -> None:
        # The wiring between rooms that must not import each other: a lower room sends, a higher one listens.
        # Imported here, once the models are loaded, as Django asks of signal receivers.
        from functools import partial

        from django.db.models.signals import post_delete, post_save

        from core.infra import caches, probes
        from recovery.breakers import registry as breaker_registry
        from recovery.breakers import signals as breaker_signals
        from recovery.breakers import store as breaker_store
        from recovery.breakers import traffic
        from recovery.decisions import budget, fallbacks, policies
        from recovery.decisions import services as decision_services
        from recovery.degradation import tasks as degradation_tasks
        from recovery.errors import durability, intake, rules_cache
        from recovery.errors.models import ClassificationRule
        from recovery.learning import selectors as learning_selectors

        breaker_signals.outcomes_recorded.connect(decision_services.on_outcomes, dispatch_uid="decisions")
        breaker_signals.transitions_committed.connect(
            degradation_tasks.on_transitions, dispatch_uid="degradation"
        )
        # A rule edited anywhere (API, admin, shell) is in force at once in this process, within 5 s elsewhere.
        post_save.connect(rules_cache.on_rule_change, sender=ClassificationRule, dispatch_uid="rules-saved")
        post_delete.connect(
            rules_cache.on_rule_change, sender=ClassificationRule, dispatch_uid="rules-deleted"
        )
        caches.register(
            rules_cache.invalidate,
            breaker_registry.forget,
            partial(breaker_store.use_store, None),
            partial(traffic.use_store, None),
            policies.forget,
            partial(budget.use_store, None),
            partial(fallbacks.use_results, None),
            durability.forget,
            learning_selectors.forget,
        )
        # /readyz also asks whether the intake buffer's Redis persists what it accepts (docs/intake.md).
        probes.register_readiness_check("intake", intake.readiness)
