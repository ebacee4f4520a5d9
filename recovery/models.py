"""Every model of the recovery app, in one visible place: each room's models.py defines its own, and Django
finds an app's models through this module."""

from recovery.breakers.models import BreakerState, BreakerTransition, Service
from recovery.calls.models import CallAttempt
from recovery.checkpoints.models import Checkpoint, Task
from recovery.decisions.models import FallbackInvocation, FallbackOption, Operation, RecoveryPlan, RetryPolicy
from recovery.degradation.models import DegradationEvent, DegradationLevel, DegradationRule, DegradationState
from recovery.errors.models import ClassificationRule, ErrorEvent, ErrorPattern, IdempotencyRecord
from recovery.learning.models import Effectiveness
from recovery.retries.models import RetryAttempt, RetryJob
from recovery.sagas.models import CompensationAttempt, Transaction, TransactionStep

__all__ = [
    "BreakerState",
    "BreakerTransition",
    "CallAttempt",
    "Checkpoint",
    "ClassificationRule",
    "CompensationAttempt",
    "DegradationEvent",
    "DegradationLevel",
    "DegradationRule",
    "DegradationState",
    "Effectiveness",
    "ErrorEvent",
    "ErrorPattern",
    "FallbackInvocation",
    "FallbackOption",
    "IdempotencyRecord",
    "Operation",
    "RecoveryPlan",
    "RetryAttempt",
    "RetryJob",
    "RetryPolicy",
    "Service",
    "Task",
    "Transaction",
    "TransactionStep",
]
