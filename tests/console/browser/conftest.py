"""The browser tests' fixtures (tests/support/browser.py), the failure artifacts, and Redis kept routable.

A failed test leaves var/browser/<test name>.png and .html of every page it opened (CI keeps var/ as artifacts):
the hook runs as the failure is reported, before any fixture is torn down, so the pages are still open.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from typing import Any

import pytest

from tests.support.browser import PAGES, bind_queues, keep_artifacts
from tests.support.browser import _pages as _pages  # an autouse fixture
from tests.support.browser import agent_api as agent_api
from tests.support.browser import chromium as chromium
from tests.support.browser import loopback as loopback
from tests.support.browser import sign_in as sign_in
from tests.support.browser import worker as worker


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
    report = yield
    if report.failed and report.when in ("setup", "call"):
        kept = keep_artifacts(item.name, item.stash.get(PAGES, []))
        if kept:
            report.sections.append(("browser artifacts", "\n".join(f"{path}.png|.html" for path in kept)))
    return report


@pytest.fixture(autouse=True)
def _fresh_caches(_fresh_caches: None) -> Iterator[None]:
    """The suite's reset (caches dropped, this run's Redis database flushed), then the Celery queues bound again:
    the flush drops kombu's binding table, and the module's worker outlives the test."""
    bind_queues()
    yield
