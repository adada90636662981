"""/dashboards/spend: spend over time by team, model and project, MCP tool calls by server and
tool, budget use with forecasts, top keys and Claude Code sessions, each exportable as CSV
(`?format=csv&export=<table>`).

Everything is read from rollups plus the ledger rows not rolled up yet (telemetry.rollups),
and budget use from period records plus the ledger since (utilisation.py).
"""

from __future__ import annotations

import csv
import datetime as dt
import zoneinfo
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET

from governance.access import Access
from governance.models import Budget, Organization
from governance.money import format_usd, micros_to_usd
from telemetry import rollups
from telemetry.dashboards import charts, scope, tools
from telemetry.dashboards import names as names_module
from telemetry.dashboards.spans import PRESETS, Span, parse_span
from telemetry.dashboards.utilisation import (
    BudgetUse,
    budget_use,
    budgets_of,
    with_forecasts,
)

DIMENSIONS = {"team": "Team", "model": "Model", "project": "Project"}
EXPORTS = (*DIMENSIONS, "tools", "keys", "sessions", "budgets")
TOP = 10
TOP_EXPORT = 1000
COUNT_COLUMNS = (
    "requests",
    "errors",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
)


@dataclass(frozen=True, slots=True)
class Reader:
    """Whose spend the page shows: one organization, whole or only the teams a lead leads,
    and which of its budgets the user may see."""

    org: Organization
    teams: frozenset[int] | None  # None: the whole organization
    access: Access

    @property
    def filters(self) -> dict[str, Any]:
        """Rollup filters (telemetry.rollups) keeping the teams' cells only."""
        return {} if self.teams is None else {"team__in": sorted(self.teams)}

    @classmethod
    def of(cls, request: HttpRequest, org: Organization) -> Reader:
        return cls(org, scope.usage_teams(request, org.pk), scope.access_of(request))


@dataclass(frozen=True, slots=True)
class BudgetLine:
    use: BudgetUse
    owner: str
    spent: str
    limit: str
    forecast: str

    @property
    def tier(self) -> str:
        return ", ".join([*self.use.budget.model_patterns, *self.use.budget.provider_names])


def _pick_org(orgs: Sequence[Organization], wanted: str | None) -> Organization:
    for org in orgs:
        if str(org.pk) == wanted or org.name == wanted:
            return org
    return orgs[0]


@require_GET
@scope.role_required
def spend_dashboard(request: HttpRequest) -> HttpResponse:
    organizations = scope.usage_organizations(request).order_by("name")
    orgs = list(organizations.only("pk", "name", "timezone"))
    if not orgs:
        return render(request, "telemetry/spend.html", {"section": "spend", "orgs": []})
    org = _pick_org(orgs, request.GET.get("org"))
    reader = Reader.of(request, org)
    span = parse_span(request.GET, org.timezone, timezone.now())
    if request.GET.get("format") == "csv":
        return export_csv(reader, span, request.GET.get("export") or "team")
    return render(request, "telemetry/spend.html", _context(orgs, reader, span))


def _params(org: Organization, span: Span) -> list[tuple[str, str]]:
    if span.preset == "custom":
        return [
            ("org", str(org.pk)),
            ("from", span.first_day.isoformat()),
            ("to", span.last_day.isoformat()),
        ]
    return [("org", str(org.pk)), ("range", span.preset)]


def _context(orgs: list[Organization], reader: Reader, span: Span) -> dict[str, Any]:
    org = reader.org
    # One read of the rollups for every chart (a month in a zone other than UTC is ~30 day cells
    # and the hours its offset moves across midnight per dimension, not 720 hour cells each).
    series = rollups.spend_breakdown(
        org.pk,
        span.start,
        span.end,
        group_bys=list(DIMENSIONS),
        granularity=span.granularity,
        tz=org.timezone,
        filters=reader.filters,
    )
    leaders = _leaders(reader, span, series)
    names = leaders.names
    query = _params(org, span)
    csv_links = {
        name: "?" + urlencode([*query, ("format", "csv"), ("export", name)]) for name in EXPORTS
    }
    chart_list = [
        {
            "dimension": dim,
            "title": f"Spend by {label.lower()}",
            "chart": _chart(span, series[dim], dim, names),
            "csv": csv_links[dim],
        }
        for dim, label in DIMENSIONS.items()
    ]
    overall = rollups.Totals()
    for point in series["team"]:
        overall.add([getattr(point, name) for name in rollups.COUNTS])
    return {
        "section": "spend",
        "orgs": orgs,
        "org": org,
        "span": span,
        "charts": chart_list,
        "overall": overall,
        "overall_cost": format_usd(overall.cost_micros),
        "error_share": _share(overall.errors, overall.requests),
        # The model series holds the MCP tool calls' cells too (telemetry.dashboards.tools).
        "tools": tools.tool_lines(series["model"]),
        "keys": _key_lines(names, leaders.keys),
        "sessions": _session_lines(names, leaders.sessions),
        "budgets": _budget_lines(reader),
        "csv": csv_links,
        "range_links": [
            (key, label, "?" + urlencode([("org", str(org.pk)), ("range", key)]))
            for key, label in PRESETS.items()
        ],
    }


def _share(part: int, whole: int) -> str:
    if not whole:
        return "0%"
    tenths = part * 1000 // whole
    return f"{tenths // 10}.{tenths % 10}%"


def _series(reader: Reader, span: Span, dim: str) -> list[rollups.SeriesPoint]:
    return rollups.spend_series(
        reader.org.pk,
        span.start,
        span.end,
        group_by=dim,
        granularity=span.granularity,
        tz=reader.org.timezone,
        filters=reader.filters,
    )


@dataclass(frozen=True, slots=True)
class Leaders:
    """Top keys and sessions, and the names of every id the page shows (one query per kind)."""

    names: names_module.Names
    keys: list[rollups.GroupTotal]
    sessions: list[rollups.SessionTotal]


def _leaders(reader: Reader, span: Span, series: dict[str, list[rollups.SeriesPoint]]) -> Leaders:
    top_keys = _top_keys(reader, span, TOP)
    top_sessions = _top_sessions(reader, span, TOP)
    names = names_module.resolve(
        teams=[*(p.group for p in series["team"]), *(s.team_id for s in top_sessions)],
        projects=(p.group for p in series["project"]),
        keys=[*(k.group for k in top_keys), *(s.key_id for s in top_sessions)],
    )
    return Leaders(names, top_keys, top_sessions)


def _top_keys(reader: Reader, span: Span, limit: int) -> list[rollups.GroupTotal]:
    org = reader.org.pk
    return rollups.top_keys(org, span.start, span.end, limit=limit, filters=reader.filters)


def _top_sessions(reader: Reader, span: Span, limit: int) -> list[rollups.SessionTotal]:
    org = reader.org.pk
    return rollups.top_sessions(org, span.start, span.end, limit=limit, team_ids=reader.teams)


def group_label(dim: str, group: Any, names: names_module.Names) -> str:
    if dim == "team":
        return names.team(group)
    if dim == "project":
        return names.project(group)
    return tools.model_label(group)


def _chart(
    span: Span, points: list[rollups.SeriesPoint], dim: str, names: names_module.Names
) -> charts.Chart:
    buckets = span.buckets()
    # By UTC instant: the two 01:00s when daylight saving time ends are equal in Python.
    index = {bucket.astimezone(dt.UTC): i for i, bucket in enumerate(buckets)}
    groups: dict[str, list[int]] = {}
    for point in points:
        values = groups.setdefault(group_label(dim, point.group, names), [0] * len(buckets))
        position = index.get(point.bucket.astimezone(dt.UTC))
        if position is not None:
            values[position] += point.cost_micros
    return charts.stacked_bars(
        buckets,
        charts.top_series(groups, len(buckets)),
        granularity=span.granularity,
        title=f"Spend by {dim}",
    )


def _key_lines(names: names_module.Names, keys: Iterable[rollups.GroupTotal]) -> list[Any]:
    return [
        {
            "key_id": k.group,
            "name": names.key(k.group),
            "cost": format_usd(k.cost_micros),
            "requests": k.requests,
            "tokens": k.tokens,
            "logs": _logs_url(key=k.group, range="30d") if k.group else "",
        }
        for k in keys
    ]


def _session_lines(names: names_module.Names, sessions: Iterable[rollups.SessionTotal]) -> Any:
    return [
        {
            "session": s,
            "key": names.key(s.key_id),
            "team": names.team(s.team_id),
            "cost": format_usd(s.cost_micros),
            "logs": _logs_url(session=s.session_id, range="all"),
        }
        for s in sessions
    ]


def _logs_url(**params: Any) -> str:
    return reverse("telemetry:logs") + "?" + urlencode(params)


def _budgets(reader: Reader) -> list[Budget]:
    """The organization's budgets the user may see (a team lead: their teams' and keys')."""
    budgets = budgets_of(organization=reader.org.pk)
    if reader.access.condition(Budget, "view") is None:
        return budgets
    shown = reader.access.visible(Budget.objects.filter(organization_id=reader.org.pk))
    ids = set(shown.values_list("pk", flat=True))
    return [b for b in budgets if b.pk in ids]


def _budget_lines(reader: Reader) -> list[BudgetLine]:
    org = reader.org
    budgets = _budgets(reader)
    uses = with_forecasts(budget_use(budgets))
    return [
        BudgetLine(
            use=uses[b.pk],
            owner=owner_label(b),
            spent=format_usd(uses[b.pk].spent_micros),
            limit=format_usd(b.amount_micros),
            forecast=forecast_text(uses[b.pk], org.timezone),
        )
        for b in budgets
    ]


def owner_label(budget: Budget) -> str:
    if budget.virtual_key is not None:
        return f"key {budget.virtual_key}"  # parent/name for a sub-key
    if budget.team is not None:
        return f"team {budget.team.name}"
    if budget.project is not None:
        return f"project {budget.project.name}"
    return f"organization {budget.organization.name}"


def _cents(micros: int) -> int:
    """A projection to the nearest cent: its sixth decimal would be false precision."""
    return (micros + 5_000) // 10_000 * 10_000


def forecast_text(use: BudgetUse, tz_name: str) -> str:
    if use.exhausted:
        return "exhausted"
    if use.exhaustion_at is not None:
        when = use.exhaustion_at.astimezone(zoneinfo.ZoneInfo(tz_name))
        return f"runs out {when:%b} {when.day}, {when:%H:%M} at the last 7 days' rate"
    if use.projected_micros is not None and use.daily_rate_micros:
        return f"on track: about {format_usd(_cents(use.projected_micros))} by period end"
    if use.daily_rate_micros:
        return f"about {format_usd(_cents(use.daily_rate_micros))} a day"
    return "no spend in the last 7 days"


# --- CSV ------------------------------------------------------------------------------------


def _usd(micros: int) -> str:
    """Exact dollars with all six decimals, so every row of a column has the same shape."""
    return f"{micros_to_usd(micros):.6f}"


def _cell(value: Any) -> Any:
    """Neutralise text a spreadsheet would run as a formula (names are user-chosen)."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def export_csv(reader: Reader, span: Span, export: str) -> HttpResponse:
    org = reader.org
    if export not in EXPORTS:
        export = "team"
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    stamp = f"{span.first_day:%Y%m%d}-{span.last_day:%Y%m%d}"
    response["Content-Disposition"] = (
        f'attachment; filename="spend-{export}-{org.name}-{stamp}.csv"'
    )
    writer = csv.writer(response)
    writers: dict[str, Callable[[Any, Reader, Span], None]] = {
        "tools": _csv_tools,
        "keys": _csv_keys,
        "sessions": _csv_sessions,
        "budgets": _csv_budgets,
    }
    if export in DIMENSIONS:
        _csv_series(writer, reader, span, export)
    else:
        writers[export](writer, reader, span)
    return response


def _csv_series(writer: Any, reader: Reader, span: Span, dim: str) -> None:
    points = _series(reader, span, dim)
    ids = [p.group for p in points]
    names = names_module.resolve(
        teams=ids if dim == "team" else (), projects=ids if dim == "project" else ()
    )
    writer.writerow(["bucket_start", dim, f"{dim}_id", "cost_usd", *COUNT_COLUMNS])
    for p in points:
        group_id = p.group if dim != "model" else ""
        writer.writerow(
            [
                p.bucket.isoformat(),
                # A tool's own name (mcp:<server>/<tool>), not the chart's shared label.
                _cell(
                    str(p.group) if dim == "model" and p.group else group_label(dim, p.group, names)
                ),
                group_id,
                _usd(p.cost_micros),
                *(getattr(p, name) for name in COUNT_COLUMNS),
            ]
        )


def _csv_tools(writer: Any, reader: Reader, span: Span) -> None:
    writer.writerow(tools.CSV_HEADER)
    for row in tools.csv_rows(_series(reader, span, "model")):
        writer.writerow([_cell(value) for value in row])


def _csv_keys(writer: Any, reader: Reader, span: Span) -> None:
    keys = _top_keys(reader, span, TOP_EXPORT)
    names = names_module.resolve(keys=(k.group for k in keys))
    writer.writerow(["rank", "key_id", "key", "cost_usd", *COUNT_COLUMNS])
    for rank, k in enumerate(keys, start=1):
        writer.writerow(
            [
                rank,
                k.group,
                _cell(names.key(k.group)),
                _usd(k.cost_micros),
                *(getattr(k, name) for name in COUNT_COLUMNS),
            ]
        )


def _csv_sessions(writer: Any, reader: Reader, span: Span) -> None:
    sessions = _top_sessions(reader, span, TOP_EXPORT)
    names = names_module.resolve(
        teams=(s.team_id for s in sessions), keys=(s.key_id for s in sessions)
    )
    writer.writerow(
        ["rank", "session_id", "key", "team", "agents", "first_seen", "last_seen", "cost_usd"]
        + [name for name in COUNT_COLUMNS if name != "errors"]
    )
    for rank, s in enumerate(sessions, start=1):
        writer.writerow(
            [
                rank,
                _cell(s.session_id),
                _cell(names.key(s.key_id)),
                _cell(names.team(s.team_id)),
                s.agents,
                s.first_seen.isoformat() if s.first_seen else "",
                s.last_seen.isoformat() if s.last_seen else "",
                _usd(s.cost_micros),
                *(getattr(s, name) for name in COUNT_COLUMNS if name != "errors"),
            ]
        )


def _csv_budgets(writer: Any, reader: Reader, span: Span) -> None:
    budgets = _budgets(reader)
    uses = with_forecasts(budget_use(budgets))
    writer.writerow(
        [
            "budget_id",
            "scope",
            "owner",
            "models_providers",
            "period",
            "period_label",
            "spent_usd",
            "limit_usd",
            "percent_used",
            "forecast_exhaustion",
            "projected_usd",
        ]
    )
    for b in budgets:
        use = uses[b.pk]
        writer.writerow(
            [
                b.pk,
                b.scope,
                _cell(owner_label(b)),
                _cell(", ".join([*b.model_patterns, *b.provider_names])),
                b.period,
                use.period.label,
                _usd(use.spent_micros),
                _usd(b.amount_micros),
                use.percent,
                use.exhaustion_at.isoformat() if use.exhaustion_at else "",
                _usd(use.projected_micros) if use.projected_micros is not None else "",
            ]
        )
