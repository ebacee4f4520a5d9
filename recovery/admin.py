"""The recovery app's admin pages, registered here in one visible place; each room's admin.py defines its own.
The service page is composed here: the breakers' page with the decisions' inlines and what learning found, and
the error pattern's page with what learning found, since the breakers and the errors sit below the decisions
and learning and never import them."""

from __future__ import annotations

from django.contrib import admin
from django.contrib.admin.options import InlineModelAdmin
from django.http import HttpRequest

from recovery.breakers import admin as breaker_admin
from recovery.breakers.models import BreakerTransition, Service
from recovery.checkpoints import admin as checkpoint_admin
from recovery.checkpoints.models import Checkpoint, Task
from recovery.decisions import admin as decision_admin
from recovery.decisions.models import FallbackInvocation, FallbackOption, Operation, RecoveryPlan, RetryPolicy
from recovery.degradation import admin as degradation_admin
from recovery.degradation.models import DegradationEvent, DegradationRule, DegradationState
from recovery.errors import admin as error_admin
from recovery.errors.models import ClassificationRule, ErrorEvent, ErrorPattern
from recovery.learning import admin as learning_admin
from recovery.learning.models import Effectiveness
from recovery.retries import admin as retry_admin
from recovery.retries.models import RetryJob
from recovery.sagas import admin as saga_admin
from recovery.sagas.models import Transaction, TransactionStep


class FleetServiceAdmin(learning_admin.ServiceFiguresMixin, breaker_admin.BreakerServiceAdmin):
    def more_inlines(self, request: HttpRequest) -> list[type[InlineModelAdmin]]:
        return decision_admin.service_inlines(request)  # operations, fallbacks, retry policies


class LearnedPatternAdmin(learning_admin.PatternFiguresMixin, error_admin.ErrorPatternAdmin):
    """The error pattern's page, with how each recovery action worked for it."""


admin.site.register(ClassificationRule, error_admin.ClassificationRuleAdmin)
admin.site.register(ErrorPattern, LearnedPatternAdmin)
admin.site.register(ErrorEvent, error_admin.ErrorEventAdmin)
admin.site.register(Service, FleetServiceAdmin)
admin.site.register(BreakerTransition, breaker_admin.BreakerTransitionAdmin)
admin.site.register(RetryPolicy, decision_admin.RetryPolicyAdmin)
admin.site.register(Operation, decision_admin.OperationAdmin)
admin.site.register(FallbackOption, decision_admin.FallbackOptionAdmin)
admin.site.register(RecoveryPlan, decision_admin.RecoveryPlanAdmin)
admin.site.register(FallbackInvocation, decision_admin.FallbackInvocationAdmin)
admin.site.register(RetryJob, retry_admin.RetryJobAdmin)
admin.site.register(DegradationState, degradation_admin.DegradationStateAdmin)
admin.site.register(DegradationEvent, degradation_admin.DegradationEventAdmin)
admin.site.register(DegradationRule, degradation_admin.DegradationRuleAdmin)
admin.site.register(Task, checkpoint_admin.TaskAdmin)
admin.site.register(Checkpoint, checkpoint_admin.CheckpointAdmin)
admin.site.register(Transaction, saga_admin.TransactionAdmin)
admin.site.register(TransactionStep, saga_admin.TransactionStepAdmin)
admin.site.register(Effectiveness, learning_admin.EffectivenessAdmin)
