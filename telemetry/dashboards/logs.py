"""/logs: the request log, its live feed of new rows and one request's detail."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any
from urllib.parse import urlencode

from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, render
from django.template.loader import render_to_string
from django.utils import timezone
from django.utils.cache import add_never_cache_headers
from django.views.decorators.http import require_GET

from governance.money import format_usd
from telemetry import rollups
from telemetry.dashboards import names as names_module
from telemetry.dashboards import scope
from telemetry.dashboards.logfilters import (
    RANGE_LABELS,
    Cursor,
    LiveCursor,
    LogFilterForm,
    LogFilters,
    live_rows,
    live_start,
    model_names,
    page,
    parse_filters,
)
from telemetry.models import UsageRecord

LIVE_LIMIT = 100
REFRESH_SECONDS = 3


@dataclass(frozen=True, slots=True)
class LogRow:
    """A ledger row with its names resolved and its figures formatted for the table."""

    record: UsageRecord
    organization: str
    team: str
    project: str
    key: str
    parent_key: str

    @property
    def cursor(self) -> str:
        return Cursor.of(self.record).token()

    @property
    def cost(self) -> str:
        return format_usd(self.record.cost_micros)

    @property
    def is_tool(self) -> bool:
        """An MCP tool call: it has a server and a tool where other rows have a model."""
        return self.record.route == rollups.TOOL_ROUTE

    @property
    def model(self) -> str:
        r = self.record
        if self.is_tool:
            return f"{r.tool_server}/{r.tool_name}" if r.tool_server else r.tool_name
        return r.served_model or r.routed_model or r.requested_model

    @property
    def cache_write_tokens(self) -> int:
        return self.record.cache_write_5m_tokens + self.record.cache_write_1h_tokens

    @property
    def total_tokens(self) -> int:
        r = self.record
        return r.input_tokens + r.output_tokens + r.cache_read_tokens + self.cache_write_tokens

    @property
    def status_class(self) -> str:
        status = self.record.status
        if status < 400:
            return "ok"
        return "warn" if status in (402, 429, 499) else "error"


def log_rows(records: Sequence[UsageRecord]) -> list[LogRow]:
    names = names_module.resolve(
        organizations=(r.organization_id for r in records),
        teams=(r.team_id for r in records),
        projects=(r.project_id for r in records),
        keys=[*(r.key_id for r in records), *(r.parent_key_id for r in records)],
    )
    return [
        LogRow(
            record=r,
            organization=names.organization(r.organization_id),
            team=names.team(r.team_id),
            project=names.project(r.project_id),
            key=names.key(r.key_id, r.key_name),
            parent_key=names.key(r.parent_key_id) if r.parent_key_id else "",
        )
        for r in records
    ]


def _filters(request: HttpRequest) -> tuple[LogFilterForm, LogFilters]:
    form = LogFilterForm(request.GET)
    return form, parse_filters(form, timezone.now())


def _url(filters: LogFilters, **extra: str) -> str:
    return "?" + urlencode([*filters.query_items(), *extra.items()])


def _ledger(request: HttpRequest) -> QuerySet[UsageRecord]:
    """The ledger rows this user may read: their organizations', or their teams'."""
    return scope.usage_rows(request, UsageRecord.objects.all())


@require_GET
@scope.role_required
def log_list(request: HttpRequest) -> HttpResponse:
    form, filters = _filters(request)
    before = Cursor.parse(request.GET.get("before"))
    after = Cursor.parse(request.GET.get("after"))
    # The live feed starts from the newest id now; read before the page so nothing falls
    # between the two.
    live_from = live_start()
    result = page(filters.apply(_ledger(request)), before=before, after=after)
    newest_page = result.newer is None
    context: dict[str, Any] = {
        "section": "logs",
        "form": form,
        "options": form.select_options(visible=partial(scope.visible, request)),
        "rows": log_rows(result.rows),
        "range_labels": RANGE_LABELS,
        "model_names": model_names(),
        "older_url": _url(filters, before=result.older.token()) if result.older else "",
        "newer_url": _url(filters, after=result.newer.token()) if result.newer else "",
        "newest_url": _url(filters) if (before or after) else "",
        "live": newest_page and filters.live,
        "live_url": _url(filters),
        "since": live_from.since,
        "gaps": live_from.gaps_token(),
        "refresh_ms": REFRESH_SECONDS * 1000,
        "filtered": any(name not in ("range",) for name, _ in filters.query_items()),
        "start": filters.start,
        "end": filters.end,
    }
    response = render(request, "telemetry/logs/list.html", context)
    add_never_cache_headers(response)
    return response


@require_GET
@scope.role_required
def log_live(request: HttpRequest) -> JsonResponse:
    """Rows written since the client's cursor that match the filters, as table rows to prepend.

    The cursor is `since` (the newest id looked at) and `gaps` (ids below it not yet visible
    then); the response carries the next one. The cursor moves to the newest id even when
    nothing here matched, so a quiet filter does not rescan a growing tail of other rows.
    """
    _, filters = _filters(request)
    cursor = LiveCursor.parse(request.GET.get("since"), request.GET.get("gaps"))
    found = live_rows(filters.apply(_ledger(request)), cursor, limit=LIVE_LIMIT)
    html = render_to_string(
        "telemetry/logs/_rows.html", {"rows": log_rows(found.rows), "fresh": True}, request=request
    )
    response = JsonResponse(
        {
            "html": html,
            "count": len(found.rows),
            "since": found.cursor.since,
            "gaps": found.cursor.gaps_token(),
            "truncated": found.truncated,
        }
    )
    add_never_cache_headers(response)
    return response


@require_GET
@scope.role_required
def log_detail(request: HttpRequest, request_id: str) -> HttpResponse:
    # Another team's or organization's request is not found, as if it did not exist.
    record = get_object_or_404(_ledger(request), request_id=request_id)
    row = log_rows([record])[0]
    context = {
        "section": "logs",
        "row": row,
        "r": record,
        "tokens": [
            ("Input", record.input_tokens),
            ("Output", record.output_tokens),
            ("Cache read", record.cache_read_tokens),
            ("Cache write (5 min)", record.cache_write_5m_tokens),
            ("Cache write (1 hour)", record.cache_write_1h_tokens),
        ],
        "session_url": _session_url(record),
        "key_url": "?" + urlencode({"key": record.key_id, "range": "7d"}) if record.key_id else "",
    }
    response = render(request, "telemetry/logs/detail.html", context)
    add_never_cache_headers(response)
    return response


def _session_url(record: UsageRecord) -> str:
    if not record.session_id:
        return ""
    # The session index makes "all time" cheap; the session's own span is what matters.
    return "?" + urlencode({"session": record.session_id, "range": "all"})
