"""Concurrent reports against the real PostgreSQL: no count is lost, no batch deadlocks another."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection

from recovery.errors import services as error_services
from recovery.errors.classification import ErrorReport
from recovery.errors.models import ErrorEvent, ErrorPattern

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def _run_threads(count: int, work: Callable[[int], None]) -> list[BaseException]:
    errors: list[BaseException] = []
    barrier = threading.Barrier(count)

    def run(n: int) -> None:
        try:
            barrier.wait()
            work(n)
        except BaseException as error:  # collected and asserted on below
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return errors


def test_it_loses_no_count_when_threads_report_the_same_error() -> None:
    threads, per_thread = 8, 25
    report = ErrorReport(service="svc", type_name="TimeoutError", message="timed out after 3s")

    def work(_: int) -> None:
        for _ in range(per_thread):
            error_services.record_errors([report], agent=None)

    assert _run_threads(threads, work) == []
    pattern = ErrorPattern.objects.get()
    assert pattern.total_count == threads * per_thread
    assert ErrorEvent.objects.count() == threads * per_thread


@pytest.mark.slow
def test_it_never_deadlocks_batches_that_share_patterns_in_other_orders() -> None:
    reports = [ErrorReport(service=f"svc-{i}", status_code=503) for i in range(20)]

    def work(n: int) -> None:
        ordered = reports if n % 2 else list(reversed(reports))
        for _ in range(10):
            error_services.record_errors(ordered, agent=None)

    assert _run_threads(6, work) == []
    totals = list(ErrorPattern.objects.values_list("total_count", flat=True))
    assert totals == [60] * 20
    assert ErrorEvent.objects.count() == 1200


def test_it_keeps_one_pattern_row_per_fingerprint_under_a_race() -> None:
    def work(n: int) -> None:
        error_services.record_errors([ErrorReport(service="new", message=f"boom {n}")], agent=None)

    assert _run_threads(8, work) == []
    assert ErrorPattern.objects.count() == 1
    assert ErrorPattern.objects.get().total_count == 8


def test_it_upserts_one_row_per_fingerprint_by_constraint(db: Any = None) -> None:
    field = ErrorPattern._meta.get_field("fingerprint")
    assert field.unique
