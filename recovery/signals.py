from __future__ import annotations

from typing import Any

from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from recovery import rules_cache
from recovery.models import ClassificationRule


@receiver(post_save, sender=ClassificationRule)
@receiver(post_delete, sender=ClassificationRule)
def _rules_changed(**_: Any) -> None:
    rules_cache.invalidate()
