"""The one place Rebound talks to apprise: whether it understands a channel's URL, the URL as people may see it
(masked), and the one call that sends a message.

apprise does the sending (e-mail, Slack, Teams, PagerDuty, Opsgenie, webhooks and a hundred more); around it,
Rebound's own rules:

* One attempt per call. apprise's own retries are off (`retry=0`): each attempt is a Delivery's, counted and
  spaced by services.send_delivery. Redirects are not followed (a 3xx is a failure, as in the outbound guard).
* Bounded: the sockets' connect and read timeouts are at most NOTIFICATION_TIMEOUT_SECONDS (a URL's own `cto=`
  and `rto=` may only lower them) and the whole call is cut off at that timeout too (`notify(timeout=...)`).
* Never raises: every failure is an `Outcome` with the error in words (apprise's warnings of this one call,
  which apprise 2.3 hands back with the result: no global log capture shared between threads), the URL
  masked wherever it appears.
* The URLs that name their own host (json://, xml://, form:// and their https forms jsons://, xmls://,
  forms://: a webhook of the operator's choosing) go through the outbound guard's policy
  (recovery/calls/outbound.py): the host and port must be in OUTBOUND_ALLOWED_HOSTS, checked when the channel
  is saved and again before each attempt, when the name is also resolved and refused if it points at a cloud
  metadata, link-local or other forbidden address. The URLs of a service (slack://, pagerduty://, mailto://,
  ...) go where their plugin says: their host is the service's, not the URL's.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

import apprise
from apprise.common import PersistentStoreMode

from core.infra.conf import rebound
from recovery.calls import outbound

log = logging.getLogger(__name__)

# Schemes whose URL names the host apprise posts to, and the HTTP scheme each speaks.
OWN_HOST_SCHEMES = {
    "json": "http",
    "jsons": "https",
    "xml": "http",
    "xmls": "https",
    "form": "http",
    "forms": "https",
}
# Schemes whose host may be shown: a webhook's own host (apprise also reads native https:// URLs of some
# services, whose host is the service's). Any other URL's "host" is often a token (pagerduty://key@key).
HOST_SHOWN = frozenset({*OWN_HOST_SCHEMES, "http", "https"})
ERROR_CHARS = 2000
MASK = "…"
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]{0,31}$")
_HOST = re.compile(r"^[A-Za-z0-9_.\-]+$|^\[[0-9A-Fa-f:.]+\]$")


@dataclass(frozen=True)
class Message:
    title: str
    body: str
    notify_type: str  # an apprise NotifyType value: info, success, warning, failure


@dataclass(frozen=True)
class Outcome:
    ok: bool
    error: str = ""
    # Whether another attempt cannot go better (the URL refused by the outbound policy, or no longer
    # understood): the delivery fails at once instead of waiting for its retries.
    permanent: bool = False


def _asset() -> apprise.AppriseAsset:
    # No disk (persistent storage), no plugins from the file system, nothing asynchronous, no redirects.
    return apprise.AppriseAsset(
        async_mode=False,
        http_redirects=False,
        storage_mode=PersistentStoreMode.MEMORY,
        plugin_paths=[],
    )


def scheme_of(url: str) -> str:
    scheme, sep, _ = (url or "").strip().partition("://")
    return scheme.lower() if sep and _SCHEME.match(scheme) else ""


def understands(url: str) -> bool:
    """Whether apprise knows what to do with this URL (its scheme, and the tokens that scheme needs)."""
    if not scheme_of(url):
        return False
    try:
        return bool(apprise.Apprise(asset=_asset()).add(url.strip()))
    except Exception:  # a plugin's parser that raises on odd input: not a URL apprise understands
        return False


def _host_port(url: str) -> tuple[str, int | None]:
    """The host and port of a URL whose authority is a host (credentials dropped)."""
    authority = url.partition("://")[2].split("/", 1)[0].split("?", 1)[0].split("#", 1)[0]
    hostport = authority.rpartition("@")[2]
    if hostport.startswith("["):
        host, _, rest = hostport.partition("]")
        host += "]"
        port_text = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port_text = hostport.partition(":")
    port = int(port_text) if port_text.isdigit() and 0 < int(port_text) < 65536 else None
    return host, port


def _http_url(url: str) -> str:
    """The http(s) URL of the host a json://, xml:// or form:// URL posts to, as the outbound guard reads it."""
    scheme = scheme_of(url)
    host, port = _host_port(url)
    web = OWN_HOST_SCHEMES[scheme]
    return f"{web}://{host}:{port or (443 if web == 'https' else 80)}/"


def problem(url: str) -> str | None:
    """Why a channel may not have this URL, in words; None when it may."""
    if not understands(url):
        return (
            "apprise does not understand this URL: see https://github.com/caronc/apprise/wiki for each "
            "service's form (e.g. json://host/path, slack://tokenA/tokenB/tokenC, mailto://user:pass@host)"
        )
    if scheme_of(url) in OWN_HOST_SCHEMES:
        try:
            outbound.check_url(_http_url(url))
        except outbound.UrlRefused as refused:
            return str(refused)
    return None


def mask(url: str) -> str:
    """The URL as people may see it: the scheme, and for a webhook its host; never credentials, tokens,
    path or query (`json://127.0.0.1:…/…`, `slack://…`)."""
    scheme = scheme_of(url)
    if not scheme:
        return MASK
    if scheme in HOST_SHOWN:
        host, port = _host_port(url)
        if host and _HOST.match(host):
            return f"{scheme}://{host}{':' + MASK if port else ''}/{MASK}"
    return f"{scheme}://{MASK}"


def hide(text: str, url: str) -> str:
    """`text` with the URL replaced by its masked form, and each long part of it (a token, a password, a path)
    by "…": apprise's messages may quote what they were given. The host, which the masked form shows, stays."""
    sentinel = "\x00url\x00"
    text = text.replace(url, sentinel)
    host = _host_port(url)[0] if scheme_of(url) in HOST_SHOWN else None
    rest = url.partition("://")[2]
    for part in sorted(set(re.split(r"[/?&=@:#]+", rest)), key=len, reverse=True):
        if len(part) >= 8 and part != host:  # a token or a password, not a word like "json"
            text = text.replace(part, MASK)
    return text.replace(sentinel, mask(url))


# --- sending -----------------------------------------------------------------------------------------------------


def _refused(url: str) -> Outcome | None:
    """The outbound policy, again before each attempt: the settings may have changed, and the name is resolved
    now (a name that came to point at a forbidden address is refused). apprise connects by name itself, so a
    DNS answer that changes between this check and its connection is not caught (docs/notifications.md)."""
    if scheme_of(url) not in OWN_HOST_SCHEMES:
        return None
    try:
        outbound.pinned_address(outbound.check_url(_http_url(url)))
    except outbound.UrlRefused as refused:
        return Outcome(False, f"outbound call refused: {refused}", permanent=True)
    except OSError as error:  # DNS did not answer: worth another attempt
        return Outcome(False, f"{type(error).__name__}: {error or 'name resolution failed'}")
    return None


def _bounded(notifier: apprise.Apprise, timeout_s: float) -> None:
    for plugin in notifier:
        plugin.retry = 0  # one attempt: the retries are the delivery's
        plugin.redirects = False
        plugin.socket_connect_timeout = min(float(plugin.socket_connect_timeout or timeout_s), timeout_s)
        plugin.socket_read_timeout = min(float(plugin.socket_read_timeout or timeout_s), timeout_s)


def _error_of(result: apprise.AppriseResult) -> str:
    said = [
        entry.message
        for entry in result.logs()
        if str(entry.level).upper() in ("WARNING", "ERROR", "CRITICAL") and entry.message
    ]
    status = getattr(result.status, "name", str(result.status)).lower()
    return "; ".join(dict.fromkeys(said)) or f"apprise: {status}"


def send(url: str, message: Message, *, timeout_s: float | None = None) -> Outcome:
    """One attempt to send `message` through the channel's URL. Never raises."""
    timeout = float(timeout_s if timeout_s is not None else rebound("NOTIFICATION_TIMEOUT_SECONDS"))
    refused = _refused(url)
    if refused is not None:
        return refused
    try:
        notifier = apprise.Apprise(asset=_asset())
        if not notifier.add(url.strip()):
            return Outcome(False, "apprise no longer understands the channel's URL", permanent=True)
        _bounded(notifier, timeout)
        result = notifier.notify(
            body=message.body,
            title=message.title,
            notify_type=apprise.NotifyType(message.notify_type),
            timeout=timeout,
        )
    except Exception as error:  # a plugin's bug, the task's soft time limit: recorded as the attempt's error
        log.warning("apprise raised while sending to %s: %s", mask(url), type(error).__name__)
        return Outcome(False, hide(f"{type(error).__name__}: {error}", url)[:ERROR_CHARS])
    if result:
        return Outcome(True)
    return Outcome(False, hide(_error_of(result), url)[:ERROR_CHARS])
