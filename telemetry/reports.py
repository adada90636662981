"""Usage and spend reports: what was spent over a time range, grouped by organization, team,
project, key, model, provider, Claude Code session and day (or hour), read from the rollups and
scoped to what the caller may read (governance.access).

Read the rollups (telemetry.rollups.spend_table / session_table: cells plus the ledger rows not
rolled up yet), one organization at a time; a team lead's reads are narrowed to their teams.
Money is integer micro-dollars plus a decimal USD string, never a float.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from django.utils import dateparse

from governance.access import Access
from governance.models import Organization, Project, Role, Team, VirtualKey
from governance.money import micros_to_usd
from telemetry import rollups
from telemetry.dashboards import names as names_module

DIMENSIONS = ("organization", "team", "project", "key", "model", "provider", "session")
TIME_GROUPS = ("day", "hour")
# Session lines are kept per UTC day, session and key: only these go with "session".
SESSION_DIMENSIONS = frozenset({"organization", "team", "key", "session"})
ID_FILTERS = ("organization", "team", "project", "key")
NAME_FILTERS = ("model", "provider")
DEFAULT_RANGE = dt.timedelta(days=30)
MAX_RANGE = dt.timedelta(days=400)
MAX_HOURLY_RANGE = dt.timedelta(days=31)
EARLIEST = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
LATEST = dt.datetime(2200, 1, 1, tzinfo=dt.UTC)
MAX_ID = 2**63 - 1
USD_PLACES = Decimal("0.000001")
FULL_READERS = (Role.PLATFORM_ADMIN, Role.FINANCE, Role.AUDITOR)

# Every count a rollup cell keeps, and the cost in dollars as well.
USAGE_METRICS = (*rollups.COUNTS, "cost_usd")
SPEND_METRICS = ("requests", "cost_micros", "cost_usd")
METRICS = {"usage": USAGE_METRICS, "spend": SPEND_METRICS}


class ReportError(ValueError):
    """A report the parameters cannot describe (the API answers 400)."""


class NotVisible(LookupError):
    """The parameters name an organization, team, project or key the caller may not read, or
    that does not exist: the API answers 404 either way, so ids do not leak."""


@dataclass(frozen=True, slots=True)
class ReportQuery:
    start: dt.datetime
    end: dt.datetime
    dimensions: tuple[str, ...] = ()
    granularity: str | None = None  # "day", "hour" or None (totals over the range)
    tz: str = "UTC"
    filters: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)

    @property
    def sessions(self) -> bool:
        return "session" in self.dimensions


# --- parameters --------------------------------------------------------------------------------


def _values(params: Any, name: str) -> list[str]:
    """Every value of `name`, repeated, bracketed (`name[]`) or comma-separated."""
    raw = [*params.getlist(name), *params.getlist(f"{name}[]")]
    if any("\x00" in value for value in raw):
        raise ReportError(f"{name}: contains a NUL character")  # no database stores one
    return [part.strip() for value in raw for part in value.split(",") if part.strip()]


def _zone(name: str) -> zoneinfo.ZoneInfo:
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError) as exc:
        raise ReportError(f"tz: {name!r} is not an IANA time zone") from exc


def parse_moment(text: str, zone: dt.tzinfo, name: str) -> dt.datetime:
    """An RFC 3339 date-time, or a date (its midnight in `zone`)."""
    try:
        moment = dateparse.parse_datetime(text)
        if moment is None:
            day = dateparse.parse_date(text)
            if day is None:
                raise ReportError(f"{name}: expected an RFC 3339 date-time or a date")
            moment = dt.datetime.combine(day, dt.time(0), tzinfo=zone)
        elif moment.tzinfo is None:
            moment = moment.replace(tzinfo=zone)
        moment = moment.astimezone(dt.UTC)
    except (ValueError, OverflowError) as exc:
        raise ReportError(f"{name}: {text!r} is not a date-time") from exc
    if not EARLIEST <= moment <= LATEST:
        raise ReportError(f"{name}: out of range")
    return moment


def _span(
    params: Any, zone: zoneinfo.ZoneInfo, now: dt.datetime
) -> tuple[dt.datetime, dt.datetime]:
    end_text, start_text = params.get("ending_at"), params.get("starting_at")
    end = parse_moment(end_text, zone, "ending_at") if end_text else now
    start = parse_moment(start_text, zone, "starting_at") if start_text else end - DEFAULT_RANGE
    if start >= end:
        raise ReportError("starting_at must be before ending_at")
    if end - start > MAX_RANGE:
        raise ReportError(f"a report covers at most {MAX_RANGE.days} days")
    return start, end


def _dimensions(params: Any) -> tuple[tuple[str, ...], str | None]:
    groups = _values(params, "group_by")
    unknown = [g for g in groups if g not in DIMENSIONS and g not in TIME_GROUPS]
    if unknown:
        choices = ", ".join((*DIMENSIONS, *TIME_GROUPS))
        raise ReportError(f"group_by: cannot group by {unknown[0]!r}; choose from {choices}")
    times = [g for g in groups if g in TIME_GROUPS]
    if len(set(times)) > 1:
        raise ReportError("group_by: day or hour, not both")
    dimensions = tuple(dict.fromkeys(g for g in groups if g in DIMENSIONS))
    return dimensions, times[0] if times else None


def _filters(params: Any) -> dict[str, tuple[Any, ...]]:
    filters: dict[str, tuple[Any, ...]] = {}
    for name in ID_FILTERS:
        values = _values(params, name)
        if not values:
            continue
        if not all(v.isdigit() and 0 < int(v) <= MAX_ID for v in values):
            raise ReportError(f"{name}: expected ids (positive integers)")
        filters[name] = tuple(sorted({int(v) for v in values}))
    for name in NAME_FILTERS:
        values = _values(params, name)
        if values:
            filters[name] = tuple(sorted(set(values)))
    return filters


def parse_query(params: Any, *, now: dt.datetime) -> ReportQuery:
    """A report query from request parameters (a QueryDict): `starting_at`, `ending_at` (RFC
    3339 or dates; default the last 30 days), `group_by` (organization, team, project, key,
    model, provider, session, and day or hour), `tz` (days of which zone; default UTC), and
    filters by id (`organization`, `team`, `project`, `key`) or name (`model`, `provider`)."""
    zone = _zone(params.get("tz") or "UTC")
    start, end = _span(params, zone, now)
    dimensions, granularity = _dimensions(params)
    filters = _filters(params)
    query = ReportQuery(start, end, dimensions, granularity, str(zone.key), filters)
    _check_combination(query)
    return query


def _check_combination(query: ReportQuery) -> None:
    if query.granularity == "hour" and query.end - query.start > MAX_HOURLY_RANGE:
        raise ReportError(f"group_by hour covers at most {MAX_HOURLY_RANGE.days} days")
    if not query.sessions:
        return
    others = set(query.dimensions) - SESSION_DIMENSIONS
    if others or query.filters.keys() & {"project", "model", "provider"}:
        raise ReportError(
            "sessions are kept per organization, team and key only: group_by session goes "
            "with organization, team, key and day, and filters by team or key"
        )
    if query.granularity == "hour":
        raise ReportError("sessions are kept per day: group_by session goes with day, not hour")


# --- what the caller may read ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reach:
    """An organization whose usage the caller reads: all of it (teams None) or these teams."""

    organization_id: int
    teams: frozenset[int] | None = None


def reaches(access: Access) -> list[Reach]:
    """Every organization the caller reads usage of (usage_condition's answer, per org)."""
    full = access.organizations(FULL_READERS)
    if full.everywhere:
        return [
            Reach(pk) for pk in Organization.objects.order_by("pk").values_list("pk", flat=True)
        ]
    result = {pk: Reach(pk) for pk in full.organizations}
    led: dict[int, set[int]] = {}
    for team_id, org_id in Team.objects.filter(pk__in=access.led_teams).values_list(
        "pk", "organization_id"
    ):
        if org_id not in result:
            led.setdefault(org_id, set()).add(team_id)
    result.update({org: Reach(org, frozenset(teams)) for org, teams in led.items()})
    return [result[pk] for pk in sorted(result)]


def narrow(reach_list: Sequence[Reach], filters: Mapping[str, tuple[Any, ...]]) -> list[Reach]:
    """The reaches the filters keep; NotVisible when a filter names something out of reach."""
    by_org = {reach.organization_id: reach for reach in reach_list}
    wanted = set(by_org)
    if "organization" in filters:
        asked = set(filters["organization"])
        if asked - wanted:
            raise NotVisible("organization not found")
        wanted &= asked
    for name, model in (("team", Team), ("project", Project), ("key", VirtualKey)):
        if name in filters:
            wanted &= _owners_in_reach(name, model, filters[name], by_org)
    return [by_org[pk] for pk in sorted(wanted)]


def _owners_in_reach(
    name: str, model: Any, ids: Collection[int], by_org: Mapping[int, Reach]
) -> set[int]:
    """The organizations of these teams, projects or keys; NotVisible if one is out of reach."""
    rows = model.objects.filter(pk__in=list(ids))
    if name == "key":
        rows = rows.select_related("parent")
    found = {row.pk: row for row in rows}
    orgs = set()
    for pk in ids:
        row = found.get(pk)
        reach = by_org.get(row.organization_id) if row is not None else None
        if row is None or reach is None or not _in_reach(name, row, reach):
            raise NotVisible(f"{name} not found")
        orgs.add(row.organization_id)
    return orgs


def _in_reach(name: str, row: Any, reach: Reach) -> bool:
    if reach.teams is None or name == "project":
        return True
    if name == "team":
        return bool(row.pk in reach.teams)
    team = row.parent.team_id if row.parent is not None else row.team_id
    return team in reach.teams


# --- reading -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReportLine:
    organization_id: int
    row: rollups.TableRow


def read(query: ReportQuery, reach_list: Iterable[Reach]) -> list[ReportLine]:
    """The report's lines, organization by organization, in time order then by group."""
    lines = []
    for reach in reach_list:
        filters = _cell_filters(query, reach)
        if filters is None:
            continue
        for row in _table(query, reach.organization_id, filters):
            lines.append(ReportLine(reach.organization_id, row))
    lines.sort(key=lambda line: (_instant(line.row.bucket), line.organization_id))
    return lines


def _instant(bucket: dt.datetime | dt.date | None) -> str:
    if isinstance(bucket, dt.datetime):
        return bucket.astimezone(dt.UTC).isoformat()
    return bucket.isoformat() if bucket is not None else ""


def _cell_filters(query: ReportQuery, reach: Reach) -> dict[str, Collection[Any]] | None:
    """The table filters for one organization; None when nothing in it can match."""
    filters: dict[str, Collection[Any]] = {
        name: values for name, values in query.filters.items() if name != "organization"
    }
    if reach.teams is not None:
        teams = set(reach.teams)
        if "team" in filters:
            teams &= set(filters["team"])
        if not teams:
            return None
        filters["team"] = sorted(teams)
    return filters


def _table(
    query: ReportQuery, organization_id: int, filters: Mapping[str, Collection[Any]]
) -> list[rollups.TableRow]:
    if query.sessions:
        first = query.start.date()
        last = (query.end - dt.timedelta(microseconds=1)).date()
        dims = (["day"] if query.granularity == "day" else []) + list(query.dimensions)
        return rollups.session_table(organization_id, first, last, dimensions=dims, filters=filters)
    return rollups.spend_table(
        organization_id,
        query.start,
        query.end,
        dimensions=query.dimensions,
        granularity=query.granularity,
        tz=query.tz,
        filters=filters,
    )


# --- rows for JSON and CSV -----------------------------------------------------------------------

DIMENSION_COLUMNS = {
    "organization": ("organization_id", "organization"),
    "team": ("team_id", "team"),
    "project": ("project_id", "project"),
    "key": ("key_id", "key"),
    "model": ("model",),
    "provider": ("provider",),
    "session": ("session_id",),
}


def usd(micros: int) -> str:
    """Exact dollars with six decimals ("12.345678")."""
    return str(micros_to_usd(micros).quantize(USD_PLACES))


def columns(query: ReportQuery, metric: str) -> list[str]:
    head = ["bucket_start"] if query.granularity else []
    dims = [column for name in query.dimensions for column in DIMENSION_COLUMNS[name]]
    return [*head, *dims, *METRICS[metric]]


def rows(query: ReportQuery, lines: Sequence[ReportLine], metric: str) -> list[dict[str, Any]]:
    """Flat rows (column -> value): ids and names of every grouped dimension, then counts."""
    names = _names(query, lines)
    result = []
    for line in lines:
        row: dict[str, Any] = {}
        if query.granularity:
            row["bucket_start"] = _bucket_start(line.row.bucket)
        groups = dict(zip(query.dimensions, line.row.groups, strict=True))
        if "organization" in groups:
            groups["organization"] = line.organization_id
        for name in query.dimensions:
            row.update(_dimension_values(name, groups[name], names))
        for metric_name in METRICS[metric]:
            if metric_name == "cost_usd":
                row[metric_name] = usd(line.row.cost_micros)
            else:
                row[metric_name] = int(getattr(line.row, metric_name))
        result.append(row)
    return result


def _bucket_start(bucket: dt.datetime | dt.date | None) -> str | None:
    """ISO 8601 with its offset; a session line's UTC day as its midnight."""
    if bucket is None:
        return None
    if not isinstance(bucket, dt.datetime):
        bucket = dt.datetime.combine(bucket, dt.time(0), tzinfo=dt.UTC)
    return bucket.isoformat()


def _names(query: ReportQuery, lines: Sequence[ReportLine]) -> names_module.Names:
    def ids(name: str) -> list[Any]:
        if name not in query.dimensions:
            return []
        index = query.dimensions.index(name)
        return [line.row.groups[index] for line in lines]

    return names_module.resolve(
        organizations=[line.organization_id for line in lines]
        if "organization" in query.dimensions
        else [],
        teams=ids("team"),
        projects=ids("project"),
        keys=ids("key"),
    )


def _dimension_values(name: str, value: Any, names: names_module.Names) -> dict[str, Any]:
    if name in ("model", "provider"):
        return {name: value or None}
    if name == "session":
        return {"session_id": value or None}
    pk = int(value or 0) or None
    label = getattr(names, name)(pk) if pk is not None else None
    return {f"{name}_id": pk, name: label}
