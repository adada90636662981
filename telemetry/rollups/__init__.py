"""Hourly and daily rollups of the ledger, and the selectors dashboards read them through.

The package follows its seams; the names below are its public face, so callers import
`telemetry.rollups` and never a submodule:

- cells: writing (`run_rollups`, every minute) adds the ledger rows above a watermark to the
  hour, day and session cells.
- series: spend series, breakdowns and totals for the dashboards.
- sessions: the sessions that cost most.
- tables: report tables grouped by several dimensions at once, and session lines per day.
- budgets: what budgets spent over a window (`budget_costs`, for the period records) and over
  the last days (`recent_costs`, for burn-rate forecasts).
- plans: which day and hour cells make up a range of hours, and reading them.
- common: the cells' dimensions and counts, and reading the rollups and the ledger rows above the
  watermark as of one moment, which every selector does so that the rollup job's lag never
  shows.
"""

from __future__ import annotations

from telemetry.rollups.budgets import (
    BUDGET_FIELDS,
    BudgetCell,
    RateCell,
    budget_costs,
    recent_costs,
)
from telemetry.rollups.cells import BATCH_CELLS, BATCH_ROWS, BATCH_WORK_MEM, RollupRun, run_rollups
from telemetry.rollups.common import (
    CELL_DIMENSIONS,
    COUNTS,
    CURSOR,
    DAY,
    DIMENSIONS,
    GROUPS,
    HORIZON,
    HOUR,
    LEDGER_DIMENSION,
    TOOL_ROUTE,
    UTC,
    Row,
    Totals,
    cursor_position,
    tool_of,
)
from telemetry.rollups.series import (
    GroupTotal,
    SeriesPoint,
    spend_breakdown,
    spend_series,
    top_keys,
    totals,
)
from telemetry.rollups.sessions import SessionTotal, top_sessions
from telemetry.rollups.tables import SESSION_GROUPS, TableRow, session_table, spend_table

__all__ = [
    "BATCH_CELLS",
    "BATCH_ROWS",
    "BATCH_WORK_MEM",
    "BUDGET_FIELDS",
    "CELL_DIMENSIONS",
    "COUNTS",
    "CURSOR",
    "DAY",
    "DIMENSIONS",
    "GROUPS",
    "HORIZON",
    "HOUR",
    "LEDGER_DIMENSION",
    "SESSION_GROUPS",
    "TOOL_ROUTE",
    "UTC",
    "BudgetCell",
    "GroupTotal",
    "RateCell",
    "RollupRun",
    "Row",
    "SeriesPoint",
    "SessionTotal",
    "TableRow",
    "Totals",
    "budget_costs",
    "cursor_position",
    "recent_costs",
    "run_rollups",
    "session_table",
    "spend_breakdown",
    "spend_series",
    "spend_table",
    "tool_of",
    "top_keys",
    "top_sessions",
    "totals",
]
