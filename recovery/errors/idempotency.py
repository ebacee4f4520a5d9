"""`Idempotency-Key` for the intake's POSTs (`/errors` here, `/outcomes` in recovery/breakers/api.py):
core/api/idempotency.py does the work; this room gives it the database store it uses where Redis is not
configured (the embedded mode) or cannot be reached.

In a view: `return idempotent(request, "errors", lambda: self._record(request))`.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone
from rest_framework.request import Request
from rest_framework.response import Response

from core.api import idempotency
from recovery.errors.models import IdempotencyRecord


class DatabaseStore:
    """Keys in the database (IdempotencyRecord): claimed by an insert that the unique key makes atomic, taken
    over once expired by a compare-and-set on the token, pruned hourly (prune_idempotency_records)."""

    def claim(self, key: str, fingerprint: str, token: str) -> idempotency.Stored | None:
        for _ in range(3):
            now = timezone.now()
            lease = now + timedelta(seconds=idempotency.LEASE_SECONDS)
            try:
                with transaction.atomic():
                    IdempotencyRecord.objects.create(
                        key=key,
                        fingerprint=fingerprint,
                        token=token,
                        state=idempotency.RUNNING,
                        expires_at=lease,
                    )
                return None
            except IntegrityError:
                pass
            row = IdempotencyRecord.objects.filter(key=key).first()
            if row is None:
                continue  # deleted meanwhile: claim it again
            if row.expires_at > now:
                return idempotency.Stored(row.state, row.fingerprint, row.status_code or 0, row.body)
            taken = IdempotencyRecord.objects.filter(pk=row.pk, token=row.token, expires_at__lte=now).update(
                fingerprint=fingerprint,
                token=token,
                state=idempotency.RUNNING,
                status_code=None,
                body=None,
                expires_at=lease,
            )
            if taken:
                return None
        raise IntegrityError("the key kept changing hands")

    def finish(self, key: str, token: str, fingerprint: str, status: int, body: Any) -> None:
        expires = timezone.now() + timedelta(seconds=idempotency.ttl_seconds())
        IdempotencyRecord.objects.filter(key=key, token=token).update(
            fingerprint=fingerprint,
            state=idempotency.DONE,
            status_code=status,
            body=idempotency.as_json(body),
            expires_at=expires,
        )

    def release(self, key: str, token: str) -> None:
        IdempotencyRecord.objects.filter(key=key, token=token, state=idempotency.RUNNING).delete()


DATABASE_STORE = DatabaseStore()


def idempotent(request: Request, scope: str, run: Callable[[], Response]) -> Response:
    """`run()`'s answer, once per Idempotency-Key of this caller and `scope` (core/api/idempotency.py)."""
    return idempotency.with_idempotency(request, scope, run, database=DATABASE_STORE)
