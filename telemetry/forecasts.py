"""Burn-rate forecasts: when a budget's remainder runs out at its recent rate of spend.

Shared by the burn-rate alerts (telemetry.alerts) and the budget columns of the dashboards
(telemetry.dashboards.utilisation), so both compute the same date the same way. Everything is
integer arithmetic until a date is known to exist: a tiny rate against a large remainder
($0.0002 a week against $20,000) runs out millions of years ahead, past the year 9999 a
datetime can hold and past the days a timedelta can, and that must read as "no exhaustion in
sight", not raise OverflowError.
"""

from __future__ import annotations

import datetime as dt

MICROSECOND = dt.timedelta(microseconds=1)


def seconds_to_exhaustion(
    remaining_micros: int, window_spent_micros: int, window: dt.timedelta
) -> int:
    """Whole seconds, rounded up, until `remaining_micros` are spent at the rate of
    `window_spent_micros` per `window` (both positive). May be any size."""
    window_seconds = window // dt.timedelta(seconds=1)
    return -(-remaining_micros * window_seconds // window_spent_micros)


def exhaustion_at(
    *,
    now: dt.datetime,
    remaining_micros: int,
    window_spent_micros: int,
    window: dt.timedelta,
    horizon: dt.datetime,
) -> dt.datetime | None:
    """When the remainder runs out at the window's rate, if strictly before `horizon` (the
    period's end, say); None when nothing is spent or it lasts to the horizon or beyond."""
    if remaining_micros <= 0:
        raise ValueError("nothing remains to run out")
    if window_spent_micros <= 0:
        return None
    seconds = seconds_to_exhaustion(remaining_micros, window_spent_micros, window)
    # Compared in microseconds, as integers: `now + seconds` may not be a representable date.
    if seconds * 1_000_000 >= (horizon - now) // MICROSECOND:
        return None
    return now + dt.timedelta(seconds=seconds)
