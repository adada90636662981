"""Telemetry data: the usage ledger, rollups, budget period history and alerts."""

from __future__ import annotations

from telemetry.models.alerts import AlertChannel, AlertEvent
from telemetry.models.periods import BudgetPeriodRecord
from telemetry.models.rollups import RollupCursor, SessionAgent, SessionRollup, SpendRollup
from telemetry.models.usage import UsageRecord

__all__ = [
    "AlertChannel",
    "AlertEvent",
    "BudgetPeriodRecord",
    "RollupCursor",
    "SessionAgent",
    "SessionRollup",
    "SpendRollup",
    "UsageRecord",
]
