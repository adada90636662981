"""What the admin index shows of telemetry, by the user's roles (never Django permissions)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django import template

from telemetry import access

register = template.Library()


@dataclass(frozen=True, slots=True)
class AdminAccess:
    ledger: bool  # the backlog, dead letters and unpriced-model warning: every organization's
    providers: bool


@register.simple_tag(takes_context=True)
def admin_access(context: dict[str, Any]) -> AdminAccess:
    request = context.get("request")
    user = getattr(request, "user", None)
    return AdminAccess(
        ledger=access.reads_all_usage(user),
        providers=access.sees_provider_health(user),
    )
