"""The apprise side: which URLs a channel may have (apprise understands them; a webhook's host is allowed by
the outbound guard), and how a URL is shown (masked: never credentials, tokens, path or query)."""

from __future__ import annotations

from typing import Any

import pytest

from healing.notifications import sender
from tests.support.factories import rebound_settings


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("json://127.0.0.1:8080/hook?token=abc", "json://127.0.0.1:…/…"),
        ("jsons://user:pa55word@hooks.example.com/rebound", "jsons://hooks.example.com/…"),
        ("xml://[::1]:9000/x", "xml://[::1]:…/…"),
        ("slack://T0000AAAA/B0000BBBB/abcdefghijklmnopqrstuvwx/#ops", "slack://…"),
        ("pagerduty://integrationkey@apikey", "pagerduty://…"),
        ("mailtos://oncall:secret@mail.example.com/?to=team@example.com", "mailtos://…"),
        ("https://hooks.slack.com/services/T0/B0/secret", "https://hooks.slack.com/…"),
        ("not a url", "…"),
    ],
)
def test_it_masks_a_url(url: str, shown: str) -> None:
    assert sender.mask(url) == shown


@pytest.mark.parametrize(
    "url",
    [
        "json://hooks.example.com/rebound",
        "slack://T0000AAAA/B0000BBBB/abcdefghijklmnopqrstuvwx",
        "pagerduty://integrationkey@apikey",
        "opsgenie://apikey",
        "mailto://user:pass@gmail.com",
    ],
)
def test_it_knows_the_urls_apprise_understands(url: str) -> None:
    assert sender.understands(url)


@pytest.mark.parametrize("url", ["nope://x", "json://", "hooks.example.com/rebound", "", "slack://"])
def test_it_refuses_what_apprise_does_not_understand(url: str) -> None:
    assert not sender.understands(url)
    assert "apprise does not understand" in (sender.problem(url) or "")


def test_a_webhook_host_must_be_allowed(settings: Any) -> None:
    settings.REBOUND = rebound_settings(OUTBOUND_ALLOWED_HOSTS=["hooks.example.com", "127.0.0.1:8080"])
    assert sender.problem("json://hooks.example.com/rebound") is None
    assert sender.problem("jsons://user:pass@hooks.example.com/rebound") is None  # credentials are apprise's
    assert sender.problem("json://127.0.0.1:8080/hook") is None
    assert "not allowed" in (sender.problem("json://127.0.0.1:8081/hook") or "")
    assert "not allowed" in (sender.problem("form://169.254.169.254/latest/meta-data") or "")
    # A service's URL goes where its plugin says, whatever the allowlist.
    assert sender.problem("slack://T0000AAAA/B0000BBBB/abcdefghijklmnopqrstuvwx") is None


def test_it_hides_the_url_in_what_apprise_said() -> None:
    url = "json://rebound:s3cretpassw0rd@127.0.0.1:8080/hook/0123456789abcdef"
    said = sender.hide(f"could not post to {url}; auth s3cretpassw0rd; path 0123456789abcdef", url)
    assert "s3cretpassw0rd" not in said and "0123456789abcdef" not in said
    assert "json://127.0.0.1:…/…" in said


def test_it_hides_a_service_url_whole() -> None:
    url = "pagerduty://integrationkey0123@apikey456789"
    said = sender.hide("rejected integrationkey0123 for apikey456789", url)
    assert said == "rejected … for …"
