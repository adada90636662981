from __future__ import annotations

import datetime as dt

import pytest

from governance.periods import PeriodWindow, window

BERLIN, LA, UTC = "Europe/Berlin", "America/Los_Angeles", "UTC"


def utc(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)


CASES = [
    # (period, zone, now UTC, label, start UTC, end UTC)
    # Days: plain, and the 23- and 25-hour days of daylight saving changes.
    ("day", UTC, "2026-12-31T23:59:59", "2026-12-31", "2026-12-31T00:00", "2027-01-01T00:00"),
    ("day", BERLIN, "2026-07-01T21:59:59", "2026-07-01", "2026-06-30T22:00", "2026-07-01T22:00"),
    ("day", BERLIN, "2026-07-01T22:00:00", "2026-07-02", "2026-07-01T22:00", "2026-07-02T22:00"),
    ("day", BERLIN, "2026-03-29T12:00", "2026-03-29", "2026-03-28T23:00", "2026-03-29T22:00"),
    ("day", BERLIN, "2026-10-25T12:00", "2026-10-25", "2026-10-24T22:00", "2026-10-25T23:00"),
    ("day", LA, "2026-03-08T20:00", "2026-03-08", "2026-03-08T08:00", "2026-03-09T07:00"),
    ("day", LA, "2026-11-01T07:30", "2026-11-01", "2026-11-01T07:00", "2026-11-02T08:00"),
    ("day", LA, "2026-11-01T06:59", "2026-10-31", "2026-10-31T07:00", "2026-11-01T07:00"),
    # ISO weeks (Monday to Sunday), across a DST change and across year ends.
    ("week", BERLIN, "2026-03-25T10:00", "2026-W13", "2026-03-22T23:00", "2026-03-29T22:00"),
    ("week", LA, "2026-11-04T12:00", "2026-W45", "2026-11-02T08:00", "2026-11-09T08:00"),
    ("week", UTC, "2024-12-31T12:00", "2025-W01", "2024-12-30T00:00", "2025-01-06T00:00"),
    ("week", UTC, "2027-01-02T12:00", "2026-W53", "2026-12-28T00:00", "2027-01-04T00:00"),
    ("week", BERLIN, "2026-12-31T23:30", "2026-W53", "2026-12-27T23:00", "2027-01-03T23:00"),
    ("week", UTC, "2026-06-07T23:59:59", "2026-W23", "2026-06-01T00:00", "2026-06-08T00:00"),
    ("week", UTC, "2026-06-08T00:00", "2026-W24", "2026-06-08T00:00", "2026-06-15T00:00"),
    # Months, including February of a leap year, DST inside the month and the year end.
    ("month", UTC, "2028-02-29T12:00", "2028-02", "2028-02-01T00:00", "2028-03-01T00:00"),
    ("month", UTC, "2026-02-28T23:59:59", "2026-02", "2026-02-01T00:00", "2026-03-01T00:00"),
    ("month", BERLIN, "2026-03-15T12:00", "2026-03", "2026-02-28T23:00", "2026-03-31T22:00"),
    ("month", BERLIN, "2026-12-31T23:30", "2027-01", "2026-12-31T23:00", "2027-01-31T23:00"),
    ("month", LA, "2026-12-31T23:30", "2026-12", "2026-12-01T08:00", "2027-01-01T08:00"),
    ("month", LA, "2026-03-01T05:00", "2026-02", "2026-02-01T08:00", "2026-03-01T08:00"),
    ("month", LA, "2026-11-15T12:00", "2026-11", "2026-11-01T07:00", "2026-12-01T08:00"),
    # Quarters.
    ("quarter", LA, "2026-02-10T00:00", "2026-Q1", "2026-01-01T08:00", "2026-04-01T07:00"),
    ("quarter", BERLIN, "2026-05-05T12:00", "2026-Q2", "2026-03-31T22:00", "2026-06-30T22:00"),
    ("quarter", UTC, "2026-08-15T12:00", "2026-Q3", "2026-07-01T00:00", "2026-10-01T00:00"),
    ("quarter", LA, "2026-12-31T23:30", "2026-Q4", "2026-10-01T07:00", "2027-01-01T08:00"),
    ("quarter", BERLIN, "2026-12-31T23:30", "2027-Q1", "2026-12-31T23:00", "2027-03-31T22:00"),
    ("quarter", UTC, "2026-09-30T23:59:59", "2026-Q3", "2026-07-01T00:00", "2026-10-01T00:00"),
    ("quarter", UTC, "2026-10-01T00:00", "2026-Q4", "2026-10-01T00:00", "2027-01-01T00:00"),
]


@pytest.mark.parametrize("case", CASES, ids=lambda case: "-".join(case[:3]))
def test_window_in_the_organizations_time_zone(case: tuple[str, ...]) -> None:
    period, zone, now, label, start, end = case

    assert window(period, zone, utc(now)) == PeriodWindow(label, utc(start), utc(end))


@pytest.mark.parametrize("case", CASES, ids=lambda case: "-".join(case[:3]))
def test_window_contains_now_and_is_half_open(case: tuple[str, ...]) -> None:
    period, zone, now, label, _, _ = case
    found = window(period, zone, utc(now))
    assert found.start is not None and found.end is not None

    assert found.start <= utc(now) < found.end
    assert window(period, zone, found.start).label == label
    assert window(period, zone, found.end).label != label
    assert window(period, zone, found.end).start == found.end


@pytest.mark.parametrize("zone", [BERLIN, LA, UTC])
def test_window_bounds_are_utc(zone: str) -> None:
    found = window("month", zone, utc("2026-06-15T12:00"))

    assert found.start is not None and found.start.utcoffset() == dt.timedelta(0)
    assert found.end is not None and found.end.utcoffset() == dt.timedelta(0)


def test_daylight_saving_days_are_23_and_25_hours_long() -> None:
    spring = window("day", BERLIN, utc("2026-03-29T12:00"))
    autumn = window("day", LA, utc("2026-11-01T12:00"))

    assert spring.end is not None and spring.start is not None
    assert autumn.end is not None and autumn.start is not None
    assert spring.end - spring.start == dt.timedelta(hours=23)
    assert autumn.end - autumn.start == dt.timedelta(hours=25)


def test_now_in_another_offset_gives_the_same_window() -> None:
    instant = utc("2026-03-31T22:30")
    tokyo = instant.astimezone(dt.timezone(dt.timedelta(hours=9)))

    assert window("month", BERLIN, tokyo) == window("month", BERLIN, instant)
    assert window("month", BERLIN, instant).label == "2026-04"


@pytest.mark.parametrize("zone", [BERLIN, LA, UTC])
def test_lifetime_window_never_resets(zone: str) -> None:
    assert window("lifetime", zone, utc("2026-06-15T12:00")) == PeriodWindow("lifetime", None, None)


def test_unknown_period_is_refused() -> None:
    with pytest.raises(ValueError, match="fortnight"):
        window("fortnight", UTC, utc("2026-06-15T12:00"))
