"""What the breakers tell the rooms above them, which connect in RecoveryConfig.ready(): the breakers never
import the recovery decisions or the degradation levels that follow them."""

from django.dispatch import Signal

# Sent after a batch of outcomes is counted: reports (list[OutcomeReport]), services (dict[str, Service]),
# actor (Actor). The decisions count budget calls, keep cached results and settle plans.
outcomes_recorded = Signal()

# Sent after a batch of breaker transitions is committed: rows (list[BreakerTransition]). The degradation
# levels are evaluated again.
transitions_committed = Signal()
