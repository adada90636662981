"""Calendar budget periods in an organization's time zone.

The period label is part of every counter key, so a new period starts at zero by itself.
Weeks are ISO weeks (Monday to Sunday).
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from dataclasses import dataclass
from functools import lru_cache


@dataclass(frozen=True, slots=True)
class PeriodWindow:
    label: str  # e.g. "2026-11", "2026-W48", "2026-Q4", "2026-11-26", "lifetime"
    start: dt.datetime | None  # aware, UTC; None for lifetime
    end: dt.datetime | None  # exclusive; when the budget resets


@lru_cache(maxsize=64)
def _zone(name: str) -> zoneinfo.ZoneInfo:
    return zoneinfo.ZoneInfo(name)


def _month_start(year: int, month: int) -> dt.date:
    year += (month - 1) // 12
    month = (month - 1) % 12 + 1
    return dt.date(year, month, 1)


def window(period: str, tz_name: str, now: dt.datetime) -> PeriodWindow:
    """The period containing `now` (aware) for an organization in `tz_name`."""
    if period == "lifetime":
        return PeriodWindow("lifetime", None, None)
    zone = _zone(tz_name)
    today = now.astimezone(zone).date()
    if period == "day":
        start, end, label = today, today + dt.timedelta(days=1), today.isoformat()
    elif period == "week":
        start = today - dt.timedelta(days=today.weekday())
        end = start + dt.timedelta(days=7)
        iso = start.isocalendar()
        label = f"{iso.year}-W{iso.week:02d}"
    elif period == "month":
        start = today.replace(day=1)
        end = _month_start(today.year, today.month + 1)
        label = f"{today.year}-{today.month:02d}"
    elif period == "quarter":
        quarter = (today.month - 1) // 3
        start = dt.date(today.year, quarter * 3 + 1, 1)
        end = _month_start(today.year, quarter * 3 + 4)
        label = f"{today.year}-Q{quarter + 1}"
    else:
        raise ValueError(f"unknown budget period {period!r}")
    return PeriodWindow(label, _midnight(start, zone), _midnight(end, zone))


def _midnight(day: dt.date, zone: zoneinfo.ZoneInfo) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(0), tzinfo=zone).astimezone(dt.UTC)
