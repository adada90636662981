"""Writing usage events to the ledger and reading spend back from it (sync, ORM)."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Mapping
from typing import Any

from django.db.models import Q, Sum

from telemetry.models import UsageRecord

LEDGER_FIELDS = frozenset(f.name for f in UsageRecord._meta.concrete_fields) - {"id"}


def write_events(events: Iterable[Mapping[str, Any]]) -> int:
    """Insert a batch; rows whose request_id is already in the ledger are skipped (idempotent)."""
    rows = [
        UsageRecord(**{k: v for k, v in event.items() if k in LEDGER_FIELDS}) for event in events
    ]
    if not rows:
        return 0
    UsageRecord.objects.bulk_create(rows, ignore_conflicts=True, batch_size=500)
    return len(rows)


def pattern_regex(pattern: str) -> str:
    """A shell pattern (only * and ?) as an anchored regex both SQLite and PostgreSQL accept."""
    parts = []
    for char in pattern:
        if char == "*":
            parts.append(".*")
        elif char == "?":
            parts.append(".")
        else:
            parts.append(re.escape(char))
    return "^" + "".join(parts) + "$"


def spend_micros(
    *,
    scope: str,
    owner_id: int,
    start: dt.datetime | None,
    end: dt.datetime | None,
    model_patterns: tuple[str, ...] = (),
    provider_names: tuple[str, ...] = (),
) -> int:
    """Ledger spend of one budget's owner in a period: what a budget counter is seeded from.

    A key's spend includes its sub-keys', because a parent key's budgets cover its sub-keys.
    """
    owner = {
        "key": Q(key_id=owner_id) | Q(parent_key_id=owner_id),
        "team": Q(team_id=owner_id),
        "project": Q(project_id=owner_id),
        "organization": Q(organization_id=owner_id),
    }[scope]
    rows = UsageRecord.objects.filter(owner)
    if start is not None:
        rows = rows.filter(created_at__gte=start)
    if end is not None:
        rows = rows.filter(created_at__lt=end)
    if model_patterns:
        models = Q()
        for pattern in model_patterns:
            models |= Q(routed_model__regex=pattern_regex(pattern))
        rows = rows.filter(models)
    if provider_names:
        rows = rows.filter(provider__in=provider_names)
    return int(rows.aggregate(total=Sum("cost_micros"))["total"] or 0)


def write_events_and_close(events: list[dict[str, Any]]) -> int:
    """For worker threads off the event loop: write, then hand the connection back."""
    from django.db import connection

    try:
        return write_events(events)
    finally:
        connection.close()


def spend_micros_and_close(**kwargs: Any) -> int:
    from django.db import connection

    try:
        return spend_micros(**kwargs)
    finally:
        connection.close()
