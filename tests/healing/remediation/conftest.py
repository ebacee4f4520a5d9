"""Fixtures of the remediation tests; the rows they build are in tests/support/remediation.py."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from healing.remediation import services
from healing.remediation.models import RuleCursor


@pytest.fixture
def streams_from_start(db: Any) -> Iterator[None]:
    """Both cursors at the start of their streams: every transition of the test is new to the evaluator."""
    for stream in (services.CHECK_STREAM, services.BREAKER_STREAM):
        RuleCursor.objects.update_or_create(stream=stream, defaults={"last_id": 0})
    yield
