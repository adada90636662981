"""Models served at an estimated cost (no price in the book), for the admin index's warning."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from django import template
from django.db.models import Count, Max
from django.utils import timezone

from telemetry.models import UsageRecord

register = template.Library()
WINDOW = dt.timedelta(days=7)
SHOWN = 10


@dataclass(frozen=True, slots=True)
class EstimatedModel:
    model: str
    requests: int
    last_seen: dt.datetime


@register.simple_tag
def estimated_cost_models() -> list[EstimatedModel]:
    """Served models whose requests of the last 7 days were priced by a fallback (reads the
    partial index of estimated rows only)."""
    since = timezone.now() - WINDOW
    rows = (
        UsageRecord.objects.filter(cost_estimated=True, created_at__gte=since)
        .values("served_model")
        .annotate(requests=Count("id"), last_seen=Max("created_at"))
        .order_by("-requests")[:SHOWN]
    )
    return [
        EstimatedModel(row["served_model"] or "(unknown)", row["requests"], row["last_seen"])
        for row in rows
    ]
