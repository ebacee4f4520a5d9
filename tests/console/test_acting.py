"""How every console action answers (console/acting.py) and who may see the console (console/access.py)."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import AnonymousUser
from django.contrib.messages.storage.fallback import FallbackStorage
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.test import RequestFactory
from django_htmx.middleware import HtmxDetails

from console import access, acting
from core.access import roles
from core.api.errors import Conflict, InvalidInput
from core.audit.models import AuditEvent
from tests.support import factories

pytestmark = pytest.mark.django_db


def _request(user: Any, method: str = "post", htmx: bool = False, **data: str) -> HttpRequest:
    headers = {"HTTP_HX_REQUEST": "true"} if htmx else {}
    request = getattr(RequestFactory(), method)("/console/x/", data, **headers)
    request.user = user
    request.htmx = HtmxDetails(request)  # type: ignore[attr-defined]
    request.session = {}  # type: ignore[assignment]
    request._messages = FallbackStorage(request)  # type: ignore[attr-defined]
    return request


@acting.action(roles.is_operator, "an operator")
def _succeeds(request: HttpRequest) -> HttpResponse:
    return acting.done(request, "Done it.", back="/console/", fragment="<tr id='row'></tr>")


@acting.action(roles.is_operator, "an operator")
def _refuses(request: HttpRequest) -> HttpResponse:
    raise InvalidInput("must not be blank", field="reason")


def test_it_redirects_a_plain_post_back_with_303() -> None:
    response = _succeeds(_request(factories.operator()))
    assert response.status_code == 303
    assert response["Location"] == "/console/"


def test_it_follows_a_local_next_field() -> None:
    assert acting.back_to(_request(factories.operator(), next="/console/queue/?level=critical"), "/") == (
        "/console/queue/?level=critical"
    )


def test_it_ignores_a_next_field_on_another_site() -> None:
    assert (
        acting.back_to(_request(factories.operator(), next="https://evil.example/"), "/console/")
        == "/console/"
    )


def test_it_answers_htmx_with_the_fragment_and_an_out_of_band_flash() -> None:
    response = _succeeds(_request(factories.operator(), htmx=True))
    body = response.content.decode()
    assert response.status_code == 200
    assert body.startswith("<tr id='row'></tr>")
    assert 'hx-swap-oob="innerHTML"' in body and "Done it." in body


def test_it_refuses_a_role_that_may_only_look_with_403() -> None:
    response = _succeeds(_request(factories.viewer()))
    assert response.status_code == 403
    assert "needs an operator" in response.content.decode()


def test_it_answers_a_domain_error_with_its_status_naming_the_field() -> None:
    response = _refuses(_request(factories.operator()))
    assert response.status_code == 400
    assert "reason: must not be blank" in response.content.decode()


def test_it_retargets_an_htmx_refusal_to_the_flash_area() -> None:
    response = _refuses(_request(factories.operator(), htmx=True))
    assert response.status_code == 400
    assert response["HX-Retarget"] == "#flash"
    assert response["HX-Reswap"] == "innerHTML"


def test_it_answers_405_to_a_get() -> None:
    response = _succeeds(_request(factories.operator(), method="get"))
    assert response.status_code == 405
    assert response["Allow"] == "POST"


def test_it_keeps_a_conflicts_status() -> None:
    @acting.action(roles.is_operator, "an operator")
    def conflicting(request: HttpRequest) -> HttpResponse:
        raise Conflict("already resolved")

    assert conflicting(_request(factories.operator())).status_code == 409


def test_it_sends_a_signed_out_visitor_to_the_login_page() -> None:
    page = access.viewer_required(lambda request: HttpResponse("page"))
    response = page(_request(AnonymousUser(), method="get"))
    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/?next=")


def test_it_refuses_a_user_without_a_role() -> None:
    page = access.viewer_required(lambda request: HttpResponse("page"))
    with pytest.raises(PermissionDenied):
        page(_request(factories.UserFactory(is_staff=False), method="get"))


def test_it_names_the_console_as_the_audit_source() -> None:
    user = factories.operator()
    actor = access.console_actor(_request(user))
    assert actor.source == AuditEvent.Source.CONSOLE
    assert actor.label == f"user:{user.get_username()}"


def test_it_tells_templates_what_a_viewer_may_do() -> None:
    assert access.abilities(factories.viewer()) == {"can_operate": False, "can_review": False}
