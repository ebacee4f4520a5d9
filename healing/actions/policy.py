"""Who must approve a healing run before it starts: the policy by risk and trigger (docs/healing.md has the
table). Pure functions: services.py applies them to every request and every approval, whatever asked (the API,
the admin, a remediation rule, an agent's MCP tool), so that no door skips them.

| risk     | agent or rule (automatic)        | operator                                         |
|----------|----------------------------------|--------------------------------------------------|
| low      | runs at once                     | runs at once                                     |
| medium   | one operator approves            | runs at once (the request is the approval)       |
| high     | two operators, not the requester | two other operators                              |
| critical | refused (403)                    | two other operators                              |

A hold on the action and target (its verification kept failing) makes an automatic request wait for one
operator even when the risk is low.
"""

from __future__ import annotations

from dataclasses import dataclass

LOW, MEDIUM, HIGH, CRITICAL = "low", "medium", "high", "critical"
OPERATOR, AGENT, RULE, ESCALATION = "operator", "agent", "rule", "escalation"
TRIGGERS = (OPERATOR, AGENT, RULE, ESCALATION)
# Requests no human made: they never start a critical action, and wait for a human while a hold is open.
AUTOMATIC = frozenset({AGENT, RULE, ESCALATION})
# How many distinct operators must approve, by risk.
APPROVALS = {LOW: 0, MEDIUM: 1, HIGH: 2, CRITICAL: 2}
# Risks whose approvers must be others than the operator who asked.
REQUESTER_EXCLUDED = frozenset({HIGH, CRITICAL})


class Refused(Exception):
    """The request may not be made at all (a critical action asked for by an agent or a rule)."""


@dataclass(frozen=True)
class Requirement:
    """What a new run needs before it may start."""

    approvals: int  # distinct operators' approvals required
    requester_approves: bool  # the requesting operator's own request counts as one of them
    why: str  # in words, for the run's first transition

    @property
    def waits(self) -> bool:
        return self.approvals > (1 if self.requester_approves else 0)


def requirement(risk: str, trigger: str, *, held: bool = False) -> Requirement:
    """The approvals a run of this risk, asked for by this trigger, needs; Refused when it may not be asked."""
    if risk not in APPROVALS:
        raise ValueError(f"unknown risk {risk!r}")
    if trigger not in TRIGGERS:
        raise ValueError(f"unknown trigger {trigger!r}")
    automatic = trigger in AUTOMATIC
    if risk == CRITICAL and automatic:
        raise Refused(f"a critical action is never started by {'an' if trigger == AGENT else 'a'} {trigger}")
    needed = APPROVALS[risk]
    why = f"{risk} risk: " + _needs(needed, risk)
    if held and automatic and needed < 1:
        needed = 1
        why = f"{risk} risk, but the action is on hold for this target: one operator approves"
    # An operator's own request is the one approval a medium run needs; for high and critical the approvers
    # must be others.
    requester_approves = trigger == OPERATOR and needed >= 1 and risk not in REQUESTER_EXCLUDED
    if requester_approves:
        why += " (the requesting operator's request is that approval)"
    return Requirement(needed, requester_approves, why)


def _needs(count: int, risk: str) -> str:
    if count == 0:
        return "runs at once"
    others = ", neither of them the requester" if risk in REQUESTER_EXCLUDED else ""
    return "one operator approves" if count == 1 else f"{count} different operators approve{others}"


def requester_may_approve(risk: str) -> bool:
    return risk not in REQUESTER_EXCLUDED


def counted_approvers(approvers: set[int], risk: str, requester: int | None) -> set[int]:
    """The approving operators that count towards a run's approvals: a high or critical run's requester never
    does (the services start a run on these; the console shows how many it still needs)."""
    if requester is None or requester_may_approve(risk):
        return approvers
    return approvers - {requester}
