"""Webhook actions: one HTTP call through the outbound guard (recovery/calls/outbound.py: the allowlist, the
pinned address, no redirects, capped timeouts and sizes), carrying `Idempotency-Key: <run id>` so that the
receiver can drop a repeat.

The body is the action's `body_template`, a JSON value whose strings may hold `{{name}}` placeholders: the
run's validated parameters, `{{service}}` (the target) and `{{run_id}}`. A string that is exactly one
placeholder becomes the value itself (a number stays a number); a placeholder inside longer text becomes its
text. A parameter the run did not give is null (or empty text). Without a template, a POST, PUT or PATCH
sends `{"run_id", "action", "service", "parameters"}`.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

from core.api.errors import InvalidInput
from core.infra.conf import rebound
from healing.actions.outputs import ActionFailed, stored
from recovery.calls import outbound

if TYPE_CHECKING:
    from healing.actions.models import HealingRun

PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z0-9_.-]{1,100})\s*\}\}")
RUN_NAMES = ("service", "run_id")
SENDS_BODY = ("POST", "PUT", "PATCH")


def placeholders(template: Any) -> set[str]:
    """Every name a template's strings refer to."""
    found: set[str] = set()
    stack = [template]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            found.update(PLACEHOLDER.findall(item))
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return found


def render(template: Any, values: dict[str, Any]) -> Any:
    """The template with its placeholders filled from `values`."""
    if isinstance(template, str):
        whole = PLACEHOLDER.fullmatch(template.strip())
        if whole is not None:
            return values.get(whole.group(1))
        return PLACEHOLDER.sub(lambda m: _as_text(values.get(m.group(1))), template)
    if isinstance(template, dict):
        return {key: render(value, values) for key, value in template.items()}
    if isinstance(template, list):
        return [render(item, values) for item in template]
    return template


def _as_text(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


# --- saving a webhook action ---------------------------------------------------------------------------------


def check(*, url: str, method: str, body_template: Any, parameters_schema: dict[str, Any]) -> None:
    """InvalidInput naming the field when a webhook cannot be called as configured."""
    if not url:
        raise InvalidInput("a webhook action needs the URL to call", field="url")
    try:
        outbound.check_url(url)
    except outbound.UrlRefused as error:
        raise InvalidInput(str(error), field="url") from None
    if (method or "").upper() not in outbound.METHODS:
        raise InvalidInput(f"must be one of {', '.join(outbound.METHODS)}", field="method")
    try:
        json.dumps(body_template, allow_nan=False)
    except (TypeError, ValueError):
        raise InvalidInput("must be a JSON value", field="body_template") from None
    properties = parameters_schema.get("properties")
    if isinstance(properties, dict) and parameters_schema.get("additionalProperties") is False:
        # Only the parameters the schema allows can fill a placeholder: any other name is a typo.
        unknown = sorted(placeholders(body_template) - set(properties) - set(RUN_NAMES))
        if unknown:
            raise InvalidInput(
                f"{{{{{unknown[0]}}}}} names no parameter of the action's schema (nor service or run_id)",
                field="body_template",
            )


# --- calling it ------------------------------------------------------------------------------------------------


def body_of(run: HealingRun) -> Any:
    action = run.action
    values = {**run.parameters, "service": run.service, "run_id": run.pk}
    if action.body_template is not None:
        return render(action.body_template, values)
    if (action.method or "POST").upper() in SENDS_BODY:
        return {"run_id": run.pk, "action": action.name, "service": run.service, "parameters": run.parameters}
    return None


def call(run: HealingRun) -> dict[str, Any]:
    """Make the webhook's call once. Answers what the receiver said (redacted); ActionFailed if it refused,
    failed, or could not be reached."""
    action = run.action
    timeout = min(float(action.timeout_s), float(rebound("OUTBOUND_MAX_TIMEOUT_SECONDS")))
    request = outbound.OutboundRequest(
        method=(action.method or "POST").upper(),
        url=action.url,
        headers={"Idempotency-Key": str(run.pk)},
        body=body_of(run),
        timeout_s=timeout,
    )
    result = outbound.execute(request)
    output = {
        "method": request.method,
        "url": outbound.redact_url(action.url),
        "status_code": result.status_code,
        "duration_ms": result.duration_ms,
        "body": stored(result.body),
    }
    if not result.ok:
        message = result.error.message if result.error else f"HTTP {result.status_code}"
        raise ActionFailed(f"webhook failed: {message}", output)
    return output
