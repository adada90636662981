"""Which rollup cells to read for a range of whole UTC hours.

Buckets are UTC hours and UTC days. A series in another time zone reads the day cell of each
UTC day and the hour cells of only the hours its offset moves to another local day
(series_plan), so a month view reads about as many cells in New York as in UTC. Budget spend
(budgets.budget_costs) is read the same way (total_plan), plus the minutes at the ends of a
period that do not fill an hour.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from django.db.models import Case, IntegerField, Q, QuerySet, Sum, Value, When

from telemetry.models import SpendRollup
from telemetry.rollups.common import COUNTS, DAY, HOUR, Row, counts_of


def _ceil_day(hour: dt.datetime) -> dt.datetime:
    floor = hour.replace(hour=0)
    return floor if floor == hour else floor + DAY


# Which rollup cells to read for a range of whole UTC hours counted in buckets (local days of a
# time zone, say). A UTC day whose hours mostly fall in one bucket is read as its day cell,
# counted in that bucket; its other hours are read as hour cells, added to their own buckets
# and taken off the day cell's. So a month of local days reads 30 day cells per dimension and
# only the hours a zone's offset moves across midnight (5 a day in New York, none in UTC), not
# 720 hour cells. Cells are additive, so the subtraction is exact.


@dataclass(frozen=True, slots=True)
class Hours:
    """Hour cells [low, high), counted in `bucket` and taken off `minus` (when not None)."""

    low: dt.datetime
    high: dt.datetime
    bucket: Any
    minus: Any = None


@dataclass
class Plan:
    days: dict[dt.datetime, Any] = field(default_factory=dict)  # day cell start -> bucket
    hours: list[Hours] = field(default_factory=list)


def series_plan(
    low: dt.datetime, high: dt.datetime, bucket_of: Callable[[dt.datetime], Any]
) -> Plan:
    """The cells that make up [low, high) (whole UTC hours), each hour counted in
    `bucket_of(hour start)`."""
    plan = Plan()
    day = low.replace(hour=0)
    while day < high:
        runs = _runs(max(low, day), min(high, day + DAY), bucket_of)
        major = max(runs, key=lambda run: run.high - run.low)
        if major.high - major.low >= DAY / 2 and runs[0].low == day and runs[-1].high == day + DAY:
            plan.days[day] = major.bucket
            plan.hours += [Hours(r.low, r.high, r.bucket, major.bucket) for r in runs if r != major]
        else:
            plan.hours += runs
        day += DAY
    return plan


def _runs(
    low: dt.datetime, high: dt.datetime, bucket_of: Callable[[dt.datetime], Any]
) -> list[Hours]:
    """[low, high) as runs of consecutive hours in the same bucket."""
    runs: list[Hours] = []
    hour = low
    while hour < high:
        bucket = bucket_of(hour)
        if runs and _same_bucket(runs[-1].bucket, bucket):
            runs[-1] = Hours(runs[-1].low, hour + HOUR, bucket)
        else:
            runs.append(Hours(hour, hour + HOUR, bucket))
        hour += HOUR
    return runs


def _same_bucket(a: Any, b: Any) -> bool:
    """Equal buckets; local times also by offset: 01:00 EDT and 01:00 EST are equal to Python
    (same zone, same wall time) but are two hours."""
    if isinstance(a, dt.datetime) and isinstance(b, dt.datetime):
        return a == b and a.utcoffset() == b.utcoffset()
    return bool(a == b)


def total_plan(low: dt.datetime | None, high: dt.datetime | None) -> tuple[Q, list[Hours]]:
    """For one total over [low, high) (whole UTC hours; None: unbounded): the day cells to
    read (a filter) and the hour cells of the partial UTC days at the ends."""
    first_day = _ceil_day(low) if low is not None else None
    last_day = high.replace(hour=0) if high is not None else None
    if first_day is not None and last_day is not None and first_day >= last_day:
        assert low is not None and high is not None
        return Q(pk__in=[]), [Hours(low, high, None)] if low < high else []
    days, hours = Q(), []
    if first_day is not None and low is not None:
        days &= Q(bucket_start__gte=first_day)
        hours.append(Hours(low, first_day, None))
    if last_day is not None and high is not None:
        days &= Q(bucket_start__lt=last_day)
        hours.append(Hours(last_day, high, None))
    return days, [h for h in hours if h.low < h.high]


def _sums() -> dict[str, Any]:
    return {"n_" + name: Sum(name) for name in COUNTS}


def day_rows(cells: QuerySet[SpendRollup], days: Q, fields: Sequence[str]) -> Iterable[Row]:
    rows = cells.filter(days, granularity=SpendRollup.Granularity.DAY)
    return cast(Iterable[Row], rows.values(*fields).annotate(**_sums()).order_by())


def hour_rows(
    cells: QuerySet[SpendRollup],
    hours: Sequence[Hours],
    fields: Sequence[str],
    *,
    per_slot: bool = False,
) -> Iterable[Row]:
    """Hour cells of `hours`, summed per `fields` (and per `slot`, the index of their range in
    `hours`, if `per_slot`).

    Asked for by the list of their hours, which the unique index (organization, time first)
    finds directly; and cells are stored in organization and hour order (cells._spend_sql), so only
    those hours' pages are read.
    """
    if not hours:
        return []
    starts = [hour for hour, _ in _each_hour(hours)]
    rows = cells.filter(granularity=SpendRollup.Granularity.HOUR, bucket_start__in=starts)
    if per_slot:
        slot = Case(
            *(
                When(bucket_start__gte=h.low, bucket_start__lt=h.high, then=Value(i))
                for i, h in enumerate(hours)
            ),
            output_field=IntegerField(),
        )
        rows = rows.annotate(slot=slot)
        fields = ["slot", *fields]
    return cast(Iterable[Row], rows.values(*fields).annotate(**_sums()).order_by())


def _each_hour(hours: Iterable[Hours]) -> Iterator[tuple[dt.datetime, Hours]]:
    for h in hours:
        hour = h.low
        while hour < h.high:
            yield hour, h
            hour += HOUR


def plan_cells(
    organization_id: int, plan: Plan, fields: Sequence[str], filters: Mapping[str, Any]
) -> Iterator[tuple[Any, Row, list[int]]]:
    """(bucket, row of `fields`, counts) from the rollup cells `plan` names; an hour taken off
    a day cell's bucket comes again with its counts negated."""
    cells = SpendRollup.objects.filter(organization_id=organization_id, **filters)
    if plan.days:
        days = Q(bucket_start__in=list(plan.days))
        for row in day_rows(cells, days, ["bucket_start", *fields]):
            yield plan.days[row["bucket_start"]], row, counts_of(row)
    for row in hour_rows(cells, plan.hours, fields, per_slot=True):
        hours = plan.hours[row["slot"]]
        counts = counts_of(row)
        yield hours.bucket, row, counts
        if hours.minus is not None:
            yield hours.minus, row, [-value for value in counts]
