"""Number formatting for the dashboards (django.contrib.humanize is not installed)."""

from __future__ import annotations

from django import template

register = template.Library()


@register.filter
def thousands(value: object) -> str:
    """12345678 -> "12,345,678"; anything that is not a whole number is shown as it is."""
    if isinstance(value, int):
        return f"{value:,}"
    return "" if value is None else str(value)
