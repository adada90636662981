"""Time ranges of the spend dashboard, in the organization's time zone."""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass

HOUR = dt.timedelta(hours=1)
DAY = dt.timedelta(days=1)
PRESETS = {
    "24h": "Last 24 hours",
    "7d": "Last 7 days",
    "30d": "Last 30 days",
    "month": "This month",
    "last-month": "Last month",
    "90d": "Last 90 days",
}
DEFAULT_PRESET = "30d"
MAX_CUSTOM_DAYS = 400
HOURLY_UP_TO = dt.timedelta(days=2)


@dataclass(frozen=True, slots=True)
class Span:
    preset: str  # a PRESETS key, or "custom"
    start: dt.datetime  # aware, in the organization's zone
    end: dt.datetime  # exclusive
    zone: zoneinfo.ZoneInfo

    @property
    def granularity(self) -> str:
        return "hour" if self.end - self.start <= HOURLY_UP_TO else "day"

    @property
    def first_day(self) -> dt.date:
        return self.start.date()

    @property
    def last_day(self) -> dt.date:
        return (self.end - dt.timedelta(microseconds=1)).date()

    def buckets(self) -> list[dt.datetime]:
        """Every hour or local day the chart shows, empty ones included."""
        if self.granularity == "hour":
            moment = self.start.astimezone(dt.UTC)
            hours = []
            while moment < self.end:
                hours.append(moment.astimezone(self.zone))
                moment += HOUR
            return hours
        day, days = self.first_day, []
        while day <= self.last_day:
            days.append(midnight(day, self.zone))
            day += DAY
        return days


def midnight(day: dt.date, zone: zoneinfo.ZoneInfo) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(0), tzinfo=zone)


def _month_start(day: dt.date) -> dt.date:
    return day.replace(day=1)


def _parse_day(text: str | None) -> dt.date | None:
    try:
        return dt.date.fromisoformat(text) if text else None
    except ValueError:
        return None


def parse_span(query: Mapping[str, str], tz_name: str, now: dt.datetime) -> Span:
    """`range=<preset>`, or `from=YYYY-MM-DD&to=YYYY-MM-DD` (both days included)."""
    zone = zoneinfo.ZoneInfo(tz_name)
    local_now = now.astimezone(zone)
    first, last = _parse_day(query.get("from")), _parse_day(query.get("to"))
    if first is not None or last is not None:
        last = last or local_now.date()
        first = first or last
        first, last = min(first, last), max(first, last)
        first = max(first, last - dt.timedelta(days=MAX_CUSTOM_DAYS - 1))
        return Span("custom", midnight(first, zone), midnight(last + DAY, zone), zone)
    preset = query.get("range") or DEFAULT_PRESET
    if preset not in PRESETS:
        preset = DEFAULT_PRESET
    today = local_now.date()
    if preset == "24h":
        end = local_now.replace(minute=0, second=0, microsecond=0) + HOUR
        return Span(preset, end - dt.timedelta(hours=24), end, zone)
    if preset == "month":
        return Span(preset, midnight(_month_start(today), zone), local_now, zone)
    if preset == "last-month":
        this_month = _month_start(today)
        previous = _month_start(this_month - DAY)
        return Span(preset, midnight(previous, zone), midnight(this_month, zone), zone)
    days = {"7d": 7, "30d": 30, "90d": 90}[preset]
    return Span(preset, midnight(today - dt.timedelta(days=days - 1), zone), local_now, zone)
