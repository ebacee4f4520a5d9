"""Races with real threads: work started at the same moment in several threads, each with its own database
connection (closed when it ends), for the concurrency tests of any room (against PostgreSQL)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from django.db import connection


def at_once(count: int, work: Callable[[int], Any]) -> list[Any]:
    """Run work(i) in `count` threads released together; answers what each returned or raised, by i."""
    barrier = threading.Barrier(count)
    results: list[Any] = [None] * count

    def run(i: int) -> None:
        try:
            barrier.wait()
            results[i] = work(i)
        except BaseException as error:  # the caller asserts on it
            results[i] = error
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results


def raised(results: list[Any]) -> list[BaseException]:
    """The errors among at_once's results."""
    return [r for r in results if isinstance(r, BaseException)]
