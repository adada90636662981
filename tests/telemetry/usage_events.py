"""Ledger rows for telemetry tests, written through telemetry.ledger.write_events."""

from __future__ import annotations

import datetime as dt
import itertools
from typing import Any

from django.db import connection

from governance.models import VirtualKey
from telemetry import ledger

_seq = itertools.count(1)
UTC = dt.UTC


def at(text: str) -> dt.datetime:
    """An aware UTC time from 'YYYY-MM-DD HH:MM'."""
    return dt.datetime.fromisoformat(text).replace(tzinfo=UTC)


def event(
    created_at: dt.datetime,
    *,
    key: VirtualKey | None = None,
    cost: int = 1_000,
    **fields: Any,
) -> dict[str, Any]:
    values: dict[str, Any] = {
        "request_id": f"req-{next(_seq)}-{created_at.timestamp()}",
        "created_at": created_at,
        "status": 200,
        "served_model": "claude-sonnet-4-6",
        "routed_model": "claude-sonnet-4-6",
        "provider": "anthropic",
        "input_tokens": 100,
        "output_tokens": 20,
        "cache_read_tokens": 5,
        "cache_write_5m_tokens": 3,
        "cache_write_1h_tokens": 1,
        "cost_micros": cost,
    }
    if key is not None:
        values.update(
            organization_id=key.organization_id,
            team_id=key.team_id,
            project_id=key.project_id,
            key_id=key.pk,
            parent_key_id=key.parent_id,
            key_name=key.name,
        )
    values.update(fields)
    return values


def write(*events: dict[str, Any]) -> None:
    ledger.write_events(list(events))


def is_postgres() -> bool:
    return connection.vendor == "postgresql"
