"""Issue 11, items 3 and 23: the drain never drops what was accepted. A database that cannot be reached is waited
for (the entries stay queued); only an entry the database refuses for its content goes to the dead-letter
stream, which is capped, measured, and listed, shown, replayed and purged by `manage.py intake_dead_letters`."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
import redis
from django.conf import settings
from django.core.management import CommandError, call_command
from django.db import InterfaceError, OperationalError
from django.test import override_settings
from prometheus_client import REGISTRY

from recovery.errors import intake
from recovery.errors import services as error_services
from recovery.errors.classification import ErrorReport
from recovery.errors.models import ErrorEvent, ErrorPattern
from tests.support.factories import rebound_settings

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.django_db(transaction=True)]
BUFFERED = rebound_settings(INTAKE_MODE="buffered")
TIMEOUT = ErrorReport(service="svc", type_name="TimeoutError", message="timed out after 3 s")


def _client() -> redis.Redis:
    return redis.Redis.from_url(settings.TEST_REDIS_URL)


def _queued(n: int) -> None:
    for _ in range(n):
        error_services.record_errors([TIMEOUT], agent=None)


def _pending_in_group() -> int:
    info: Any = _client().xpending(intake.STREAM, intake.GROUP)
    return int(info["pending"])


def _failing_writes(monkeypatch: pytest.MonkeyPatch, error: Exception, times: int) -> list[int]:
    """The database fails the next `times` writes with `error` (as during a restart), then works."""
    real = intake._write
    calls = [0]

    def write(*args: Any) -> int:
        calls[0] += 1
        if calls[0] <= times:
            raise error
        return real(*args)

    monkeypatch.setattr(intake, "_write", write)
    return calls


@override_settings(REBOUND=BUFFERED)
@pytest.mark.parametrize(
    "error",
    [
        OperationalError("server closed the connection unexpectedly"),
        OperationalError("the database system is starting up"),
        InterfaceError("connection already closed"),
    ],
)
@pytest.mark.slow
def test_a_database_that_cannot_be_reached_is_waited_for_not_dead_lettered(
    monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    _queued(5)
    calls = _failing_writes(monkeypatch, error, times=3)
    assert intake.drain(budget_s=10) == 5
    assert calls[0] == 4  # three failures waited out, then one write of the whole batch
    assert _client().xlen(intake.DEAD) == 0
    assert ErrorEvent.objects.count() == 5
    assert ErrorPattern.objects.get().total_count == 5


@override_settings(REBOUND=BUFFERED)
def test_entries_stay_queued_when_the_budget_runs_out_and_the_next_drain_writes_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _queued(4)
    calls = _failing_writes(monkeypatch, OperationalError("could not connect to server"), times=10**6)
    assert intake.drain(budget_s=0.5) == 0
    assert calls[0] >= 2
    assert _client().xlen(intake.DEAD) == 0
    assert _client().xlen(intake.STREAM) == 4
    assert _pending_in_group() == 4  # read by this consumer, not acknowledged
    monkeypatch.undo()
    assert intake.drain() == 4
    assert _pending_in_group() == 0
    assert _client().xlen(intake.STREAM) == 0
    assert ErrorEvent.objects.count() == 4


@override_settings(REBOUND=BUFFERED)
def test_only_the_entry_the_database_refuses_is_set_aside_and_its_count_stays_pending() -> None:
    _queued(3)
    _bad_entry()
    _queued(3)
    assert intake.drain() == 6
    dead = _client().xrange(intake.DEAD)
    assert len(dead) == 1
    assert dead[0][1][b"error"].startswith(b"DataError")
    assert ErrorEvent.objects.count() == 6
    # The answers' totals still count the parked report: it was accepted, and a replay may write it.
    assert int(_client().hget(intake.PENDING, _bad_fingerprint()) or 0) == 1
    assert _gauge() == 1
    assert _counter() >= 1


def _bad_fingerprint() -> str:
    return "f" * 40


def _bad_entry() -> bytes:
    """A queued report whose operation the database refuses (longer than its column): as an entry queued by
    a release that validated less would be."""
    error_services.record_errors([ErrorReport(service="svc", operation="op", message="bad")], agent=None)
    client = _client()
    entry_id, fields = client.xrevrange(intake.STREAM, count=1)[0]
    payload = json.loads(fields[b"v"])
    client.xdel(intake.STREAM, entry_id)
    old = payload["patterns"][0][0]
    client.hincrby(intake.PENDING, old, -1)
    payload["patterns"][0][0] = _bad_fingerprint()
    payload["events"][0][0] = _bad_fingerprint()
    payload["events"][0][1]["operation"] = "o" * 201
    client.hincrby(intake.PENDING, _bad_fingerprint(), 1)
    return client.xadd(intake.STREAM, {"v": json.dumps(payload)})


def _gauge() -> float:
    return REGISTRY.get_sample_value("intake_dead_letter_entries") or 0.0


def _counter() -> float:
    return REGISTRY.get_sample_value("intake_dead_letters_total") or 0.0


@override_settings(REBOUND=rebound_settings(INTAKE_MODE="buffered", INTAKE_DEAD_LETTER_MAX=100))
def test_the_dead_letter_stream_is_capped() -> None:
    client = _client()
    for _ in range(130):
        client.xadd(intake.STREAM, {"v": b"{not json"})
    assert intake.drain() == 0
    assert client.xlen(intake.DEAD) == 100
    assert client.xlen(intake.STREAM) == 0
    assert _gauge() == 100


# --- the operator's command ------------------------------------------------------------------------------------


def _command(*args: str) -> str:
    out = io.StringIO()
    call_command("intake_dead_letters", *args, stdout=out)
    return out.getvalue()


def _healthy_dead_letter() -> bytes:
    """A healthy entry set aside by the old drain during a database restart (issue 11, item 23)."""
    error_services.record_errors([TIMEOUT, TIMEOUT], agent=None)
    client = _client()
    entry_id, fields = client.xrange(intake.STREAM)[-1]
    client.xdel(intake.STREAM, entry_id)
    return client.xadd(
        intake.DEAD,
        {"v": fields[b"v"], "entry": entry_id, "error": b"OperationalError: server closed the connection"},
    )


@override_settings(REBOUND=BUFFERED)
def test_the_command_lists_and_shows_dead_letters() -> None:
    dead_id = _healthy_dead_letter().decode()
    listed = _command("list")
    assert dead_id in listed and "OperationalError" in listed and "2 reports" in listed
    shown = _command("show", "--id", dead_id)
    assert "timed out after" in shown and "OperationalError" in shown


@override_settings(REBOUND=BUFFERED)
def test_the_command_replays_a_dead_letter_and_the_drain_writes_it_once() -> None:
    dead_id = _healthy_dead_letter().decode()
    assert "Replayed 1" in _command("replay", "--id", dead_id)
    assert _client().xlen(intake.DEAD) == 0
    assert intake.drain() == 2
    assert ErrorPattern.objects.get().total_count == 2
    assert not _client().hget(intake.PENDING, ErrorPattern.objects.get().fingerprint)
    assert _gauge() == 0


@override_settings(REBOUND=BUFFERED)
def test_a_replayed_entry_already_written_is_not_counted_twice() -> None:
    # Written, then set aside anyway (an acknowledgement lost): its events keep their first intake keys.
    error_services.record_errors([TIMEOUT], agent=None)
    client = _client()
    entry_id, fields = client.xrange(intake.STREAM)[0]
    assert intake.drain() == 1
    client.xadd(intake.DEAD, {"v": fields[b"v"], "k": entry_id, "entry": entry_id, "error": b"lost ack"})
    _command("replay", "--all")
    assert intake.drain() == 0
    assert ErrorPattern.objects.get().total_count == 1


@override_settings(REBOUND=BUFFERED)
def test_the_command_purges_one_or_all_and_forgets_their_pending_counts() -> None:
    first = _healthy_dead_letter().decode()
    _healthy_dead_letter()
    fingerprint = json.loads(_client().xrange(intake.DEAD)[0][1][b"v"])["patterns"][0][0]
    assert int(_client().hget(intake.PENDING, fingerprint) or 0) == 4
    assert "Purged 1" in _command("purge", "--id", first)
    assert int(_client().hget(intake.PENDING, fingerprint) or 0) == 2
    assert "Purged 1" in _command("purge", "--all")
    assert _client().xlen(intake.DEAD) == 0
    assert not _client().hget(intake.PENDING, fingerprint)


@override_settings(REBOUND=BUFFERED)
@pytest.mark.parametrize(
    "args",
    [("replay",), ("purge",), ("show",), ("replay", "--id", "1-0", "--all"), ("show", "--id", "9-9")],
)
def test_the_command_refuses_an_unclear_order(args: tuple[str, ...]) -> None:
    with pytest.raises(CommandError):
        _command(*args)
