"""What the rollup modules share: the cells' dimensions and counts, the ledger read in the
shape of a cell, the watermark, and reading the rollups and the ledger above the watermark as of
one moment.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, TypeVar

from django.db.models import Case, CharField, Count, F, Q, Sum, Value, When
from django.db.models.functions import Coalesce, Concat, NullIf, Substr

from governance.money import micros_to_usd
from telemetry.models import RollupCursor

CURSOR = "ledger"
HORIZON = "ledger.horizon"
HOUR = dt.timedelta(hours=1)
DAY = dt.timedelta(days=1)
UTC = dt.UTC

DIMENSIONS = ("organization_id", "team_id", "project_id", "key_id", "model", "provider")
# What makes a cell: the dimensions plus what budgets match on (see SpendRollup).
CELL_DIMENSIONS = (*DIMENSIONS, "routed_model", "parent_key_id")
COUNTS = (
    "requests",
    "errors",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "cost_micros",
)
GROUPS = {
    "team": "team_id",
    "project": "project_id",
    "key": "key_id",
    "model": "model",
    "provider": "provider",
    "organization": "organization_id",
}

T = TypeVar("T")

Row = Mapping[str, Any]


# --- reading the ledger in rollup shape ------------------------------------------------------


# MCP tool calls (route "mcp.tool") are cells whose model is "mcp:<server>/<tool>": the spend
# dashboard's tools breakdown reads them from the same cells as the models, with no column of
# their own. Their provider is "mcp:<server>" and their routed model "", which is what budgets
# match on (telemetry.ledger.spend_micros).
TOOL_ROUTE = "mcp.tool"
TOOL_MODEL_PREFIX = "mcp:"
MODEL_LENGTH = 200  # SpendRollup.model


def tool_of(model: str) -> tuple[str, str] | None:
    """(server, tool) of a cell's model, or None when the cell is not a tool's."""
    if not model.startswith(TOOL_MODEL_PREFIX):
        return None
    server, _, tool = model.removeprefix(TOOL_MODEL_PREFIX).partition("/")
    return server, tool


def ledger_dimensions() -> dict[str, Any]:
    """Ledger columns as rollup dimensions: NULL ids become 0, the model is the served one
    (for a tool call, mcp:<server>/<tool>)."""
    tool = Substr(
        Concat(Value(TOOL_MODEL_PREFIX), "tool_server", Value("/"), "tool_name"), 1, MODEL_LENGTH
    )
    return {
        "d_org": Coalesce("organization_id", Value(0)),
        "d_team": Coalesce("team_id", Value(0)),
        "d_project": Coalesce("project_id", Value(0)),
        "d_key": Coalesce("key_id", Value(0)),
        "d_model": Case(
            When(route=TOOL_ROUTE, then=tool),
            default=Coalesce(
                NullIf("served_model", Value("")),
                NullIf("routed_model", Value("")),
                "requested_model",
            ),
            output_field=CharField(),
        ),
        "d_provider": F("provider"),
    }


LEDGER_DIMENSION = {
    "organization_id": "d_org",
    "team_id": "d_team",
    "project_id": "d_project",
    "key_id": "d_key",
    "model": "d_model",
    "provider": "d_provider",
}


def ledger_counts() -> dict[str, Any]:
    return {
        "n_requests": Count("id"),
        "n_errors": Count("id", filter=Q(status__gte=400)),
        "n_input_tokens": Sum("input_tokens"),
        "n_output_tokens": Sum("output_tokens"),
        "n_cache_read_tokens": Sum("cache_read_tokens"),
        "n_cache_write_tokens": Sum(F("cache_write_5m_tokens") + F("cache_write_1h_tokens")),
        "n_cost_micros": Sum("cost_micros"),
    }


def counts_of(row: Mapping[str, Any], prefix: str = "n_") -> list[int]:
    return [int(row[prefix + name] or 0) for name in COUNTS]


@dataclass
class Totals:
    requests: int = 0
    errors: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cost_micros: int = 0

    def add(self, counts: Sequence[int]) -> None:
        for name, value in zip(COUNTS, counts, strict=True):
            setattr(self, name, getattr(self, name) + int(value))

    @property
    def tokens(self) -> int:
        return (
            self.input_tokens
            + self.output_tokens
            + self.cache_read_tokens
            + self.cache_write_tokens
        )

    @property
    def cost_usd(self) -> Decimal:
        return micros_to_usd(self.cost_micros)


def cursor_position() -> int:
    row = RollupCursor.objects.filter(name=CURSOR).values_list("last_usage_id", flat=True)
    return int(row[0]) if row else 0


def floor_hour(value: dt.datetime) -> dt.datetime:
    return value.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def ceil_hour(value: dt.datetime) -> dt.datetime:
    floor = floor_hour(value)
    return floor if floor == value else floor + HOUR


def read_consistently(read: Callable[[int], T]) -> T:
    """Run `read(cursor)` so that rollups and the ledger above the cursor are from the same
    moment: if a rollup batch committed meanwhile (the cursor moved), read again."""
    for _ in range(5):
        before = cursor_position()
        result = read(before)
        if cursor_position() == before:
            return result
    return result
