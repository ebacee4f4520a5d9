"""The operators' web console (/console/): fleet at a glance, review queue, approvals, timelines, search.

Reserved: the console issue builds it here, above healing, recovery and core (docs/architecture.md).
"""
