"""Every admin list of Rebound's apps shows the columns an operator scans and a sane page of rows: list_display
chosen (never Django's lone `__str__`), at most 7 columns, at most 100 rows a page, and each changelist renders
for an operator with a row in it."""

from __future__ import annotations

import itertools
from datetime import timedelta
from typing import Any

import pytest
from django.contrib import admin
from django.db import models, transaction
from django.test import Client
from django.utils import timezone

from tests.support import factories
from tests.support.browser import _pages as _pages  # an autouse fixture: the pages kept if a test fails
from tests.support.browser import chromium as chromium
from tests.support.browser import sign_in as sign_in

pytestmark = pytest.mark.django_db

APPS = ("core", "recovery", "healing")
MAX_COLUMNS = 7
ADMINS = sorted(
    (
        (model, model_admin)
        for model, model_admin in admin.site._registry.items()
        if model._meta.app_label in APPS
    ),
    key=lambda pair: pair[0]._meta.label,
)
IDS = [model._meta.label for model, _ in ADMINS]
_numbers = itertools.count(1)
# What the models' check constraints ask beyond their fields' types.
CONSTRAINED: dict[str, Any] = {
    "healing.RemediationRule": lambda: {"trigger": "breaker_open", "service": "payments"},
    "healing.Silence": lambda: {"ends_at": timezone.now() + timedelta(hours=1)},
    "recovery.FallbackOption": lambda: {"kind": "skip"},
    "recovery.RetryJob": lambda: {"kind": "http", "task_name": ""},
}


def _value(field: models.Field[Any, Any]) -> Any:
    """A valid value of a required field: its first choice, or something of its type."""
    if field.choices:
        return field.choices[0][0]  # type: ignore[index]
    n = next(_numbers)
    if isinstance(field, models.DateTimeField):
        return timezone.now() - timedelta(minutes=n)
    if isinstance(field, models.DurationField):
        return timedelta(seconds=n)
    if isinstance(field, models.BooleanField):
        return False
    if isinstance(field, (models.IntegerField, models.FloatField, models.DecimalField)):
        return n
    if isinstance(field, models.JSONField):
        return {}
    if isinstance(field, models.UUIDField):
        import uuid

        return uuid.uuid4()
    if isinstance(field, models.CharField) and field.max_length and field.max_length < 8:
        return str(n)[: field.max_length]
    if isinstance(field, models.TextField):
        # Long enough to show that a column keeps it to one line.
        return f"row-{n} " + "a long text that an operator reads in full on the object's own page " * 3
    if isinstance(field, models.CharField):
        return f"checkout-api-{n}"  # a name as people give them
    return None


def a_row(model: type[models.Model]) -> models.Model:
    """One row of `model`, its required fields filled and its required relations created the same way."""
    found = model._default_manager.first()
    if found is not None:
        return found
    values: dict[str, Any] = CONSTRAINED.get(model._meta.label, dict)()
    for field in model._meta.concrete_fields:
        if (
            field.name in values
            or field.primary_key
            or field.null
            or field.has_default()
            or getattr(field, "auto_now_add", False)
        ):
            continue
        if field.is_relation:
            values[field.name] = a_row(field.related_model)  # type: ignore[arg-type]
            continue
        value = _value(field)
        if value is not None:
            if isinstance(field, models.CharField) and field.max_length:
                value = value[: field.max_length] if isinstance(value, str) else value
            values[field.name] = value
    return model._default_manager.create(**values)


@pytest.mark.parametrize(("model", "model_admin"), ADMINS, ids=IDS)
def test_it_chooses_the_columns_of_each_list(model: type[models.Model], model_admin: Any) -> None:
    assert tuple(model_admin.list_display) != ("__str__",)
    assert len(model_admin.list_display) <= MAX_COLUMNS, model_admin.list_display
    assert model_admin.list_per_page <= 100


@pytest.mark.parametrize(("model", "model_admin"), ADMINS, ids=IDS)
def test_it_renders_each_list_with_a_row_for_an_operator(
    operator: Client, model: type[models.Model], model_admin: Any
) -> None:
    with transaction.atomic():
        if model._meta.label == "core.ApiKey":
            factories.agent_key()  # a key belongs to an agent or a user: a check the filler would miss
        a_row(model)
    opts = model._meta

    response = operator.get(f"/admin/{opts.app_label}/{opts.model_name}/")

    assert response.status_code == 200
    assert response.context["cl"].result_count >= 1


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_it_fits_each_list_in_1280_px_without_scrolling_sideways(sign_in: Any) -> None:
    """In the real browser at 1280x800, each list with a row of long texts: no horizontal scrollbar."""
    for model, _ in ADMINS:
        if model._meta.label == "core.ApiKey":
            factories.agent_key()
        a_row(model)
    page = sign_in(factories.operator())
    too_wide = {}
    for model, _ in ADMINS:
        page.goto(f"/admin/{model._meta.app_label}/{model._meta.model_name}/")
        # The page itself, and the results box (the admin scrolls a too-wide table inside it).
        width = page.evaluate(
            "Math.max(document.documentElement.scrollWidth,"
            " 1280 + Math.max(0, ...[...document.querySelectorAll('#changelist .results')]"
            ".map(box => box.scrollWidth - box.clientWidth)))"
        )
        if width > 1280:
            too_wide[model._meta.label] = width
    assert too_wide == {}
