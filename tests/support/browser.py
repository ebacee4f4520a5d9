"""What the console's browser tests share (tests/console/browser/): the system's Chromium driven by Playwright's
sync API, pytest-django's live server (in this process, on this run's test database; it serves the static
files, so console.css and the vendored htmx load as they would behind WhiteNoise), a real Celery worker process
on this run's PostgreSQL and Redis databases, and a loopback HTTP target for healing webhooks.

Why the live server rather than gunicorn: it runs on the test settings in this process, so each test's
`_fresh_caches` reset reaches it (service configs, the breaker store), `override_settings` applies to its
requests, and it needs no collectstatic. What must be a separate process to be real, the worker, is one.

The fixtures are imported by tests/console/browser/conftest.py. One browser, one worker and one target per test
module (starting them is most of a module's time); each test gets fresh browser contexts (no shared cookies).
When a test fails, every page it opened is kept as a screenshot and its HTML under var/browser/ (the conftest's
pytest_runtest_makereport hook calls `keep_artifacts` while the pages are still open), which CI keeps.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from celery import current_app
from playwright.sync_api import Browser, Locator, Page, ViewportSize, sync_playwright

from tests.support import factories
from tests.support.http_target import Target, running_target
from tests.support.processes import PYTHON, ROOT, process_env, start, stop, wait_for

CHROMIUM = os.environ.get("REBOUND_CHROMIUM", "/usr/bin/chromium")
VIEWPORT: ViewportSize = {"width": 1280, "height": 800}
ARTIFACTS = ROOT / "var" / "browser"
PASSWORD = "password"  # what factories.UserFactory sets
# Generous for a loaded CI machine; the assertions that measure something (the fleet's 5 s) pass their own.
TIMEOUT_MS = 15_000
# The pages opened by the running test, kept on the pytest item for the failure hook.
PAGES = pytest.StashKey[list[Page]]()


# --- the browser -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chromium() -> Iterator[Browser]:
    """The OS package's Chromium (Playwright's own browsers cannot be downloaded here), headless, one per module.
    Module scope, not session: Playwright's sync API keeps an event loop while it runs, which must not outlive
    the module into other tests of the same process."""
    if not Path(CHROMIUM).exists():
        # CI installs Chromium when it is missing, and a skipped test fails a CI run (tests/conftest.py).
        pytest.skip(f"no Chromium at {CHROMIUM} (install the chromium package or set REBOUND_CHROMIUM)")
    # Playwright's sync API runs an asyncio loop in this thread; Django's ORM would take the test's own queries
    # for async code and refuse them. They are plain synchronous calls between two browser commands.
    with pytest.MonkeyPatch.context() as patch, sync_playwright() as playwright:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        # --no-sandbox: the tests run as root in containers; --disable-dev-shm-usage: a small /dev/shm there.
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-dev-shm-usage"]
        )
        yield browser
        browser.close()


@pytest.fixture(autouse=True)
def _pages(request: pytest.FixtureRequest) -> Iterator[list[Page]]:
    """Holds the pages the test opens, for the failure hook (which runs before any fixture is torn down)."""
    pages: list[Page] = []
    request.node.stash[PAGES] = pages
    yield pages
    pages.clear()


@pytest.fixture
def sign_in(
    chromium: Browser, live_server: Any, _pages: list[Page], transactional_db: None
) -> Iterator[Callable[[Any], Page]]:
    """`sign_in(user)`: a new browser context (1280x800, no cookies of any other test), logged in through the real
    admin login page with `?next=/console/`, on the page it lands on. Contexts are closed before the test's
    database is emptied (this fixture depends on transactional_db, so it is torn down first): a page polling the
    server must not race the teardown."""
    contexts = []

    def open_as(user: Any) -> Page:
        context = chromium.new_context(viewport=VIEWPORT, base_url=live_server.url)
        context.set_default_timeout(TIMEOUT_MS)
        contexts.append(context)
        page = context.new_page()
        _pages.append(page)
        log_in(page, user)
        return page

    yield open_as
    for context in contexts:
        context.close()


def log_in(page: Page, user: Any) -> None:
    page.goto("/admin/login/?next=/console/")
    page.fill("#id_username", user.get_username())
    page.fill("#id_password", PASSWORD)
    page.locator("#login-form [type=submit]").click()
    page.wait_for_url(re.compile(r"/console/$"))


def press(scope: Locator, verb: str) -> None:
    """Click the control of `verb` in `scope`: `[data-action=verb]` is either the button itself or the form that
    holds it (then its submit button)."""
    control = scope.locator(f'[data-action="{verb}"]').first
    if control.evaluate("element => element.tagName") == "FORM":
        control.locator("button, [type=submit]").first.click()
    else:
        control.click()


def keep_artifacts(name: str, pages: list[Page]) -> list[Path]:
    """A screenshot and the HTML of each open page, as var/browser/<test name>[-n].png|.html."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)
    kept: list[Path] = []
    for number, page in enumerate(pages, start=1):
        if page.is_closed():
            continue
        base = ARTIFACTS / (stem if number == 1 else f"{stem}-{number}")
        try:
            page.screenshot(path=f"{base}.png", full_page=True)
            base.with_suffix(".html").write_text(page.content())
        except Exception as error:  # a crashed page: keep what can be kept, never hide the test's own failure
            base.with_suffix(".txt").write_text(f"could not save the page: {error!r}\n")
        kept.append(base)
    return kept


# --- the worker and the webhook target -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def loopback() -> Iterator[Target]:
    """The HTTP service healing webhooks call (127.0.0.1, a port of its own); what it received is in `.seen`."""
    with running_target() as target:
        yield target


class Worker:
    def __init__(self, process: subprocess.Popen[Any], log: Path) -> None:
        self.process = process
        self.log = log

    def tail(self) -> str:
        return self.log.read_text()[-4000:] if self.log.exists() else ""


@pytest.fixture(scope="module")
def worker(
    django_db_setup: None, loopback: Target, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Worker]:
    """A real `celery worker` (production settings) on this run's test database and Redis database, allowed to
    call the loopback target. Started once per module and ready before the first test's Redis flush."""
    folder = tmp_path_factory.mktemp("worker")
    log = folder / "worker.log"
    env = process_env(folder, OUTBOUND_ALLOWED_HOSTS=loopback.host, LOG_FORMAT="text")
    command = [
        PYTHON, "-m", "celery", "-A", "config", "worker", "--pool", "solo", "-l", "INFO",
        "--without-gossip", "--without-mingle", "--without-heartbeat",
    ]  # fmt: skip
    process = start(command, env, log)
    try:
        ready = wait_for(lambda: " ready." in (log.read_text() if log.exists() else ""), timeout=60)
        assert ready, f"the worker did not start:\n{Worker(process, log).tail()}"
        yield Worker(process, log)
    finally:
        stop(process)


def bind_queues() -> None:
    """Declare the Celery queues and their bindings again. Each test flushes this run's Redis database, which
    also drops kombu's binding table (`_kombu.binding.celery`); the worker declared it once, at its start, and
    this process's producer remembers having declared it, so without this a task sent by a later test would be
    routed nowhere and silently lost."""
    with current_app.connection_for_write() as connection:
        channel = connection.default_channel
        for queue in current_app.amqp.queues.values():
            queue.bind(channel).declare()


# --- talking to the live server's API as an agent ----------------------------------------------------------------


class Api:
    """The live server's JSON API with a key (an agent's by default), for what the tests do outside the browser."""

    def __init__(self, base_url: str, key: str) -> None:
        self.client = httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {key}"}, timeout=20)

    def post(self, path: str, body: Any) -> Any:
        answer = self.client.post(path, json=body)
        assert answer.status_code in (200, 201), f"{path}: {answer.status_code} {answer.text}"
        return answer.json()

    def close(self) -> None:
        self.client.close()


@pytest.fixture
def agent_api(live_server: Any, transactional_db: None) -> Iterator[Api]:
    api = Api(live_server.url, factories.agent_key()[1])
    yield api
    api.close()
