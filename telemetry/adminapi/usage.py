"""/v1/organizations/usage_report/messages and /v1/organizations/cost_report in Anthropic's
shapes, read from the rollups (telemetry.rollups.spend_table) and scoped like every report.

How the gateway's dimensions fill Anthropic's fields:
- `api_key_id`: the key's name (a sub-key: PARENT/NAME), as spend-limit `user` scopes name it;
- `workspace_id`: the project's name;
- `model`: the model that answered;
- `service_tier`, `context_window`, `inference_geo`, `speed`, `account_id`,
  `service_account_id`: not tracked, so null even when grouped by; filters on them are ignored.

Buckets are UTC hours or days (`bucket_width` 1h or 1d; the rollups are hourly, so 1m is
refused). Cache writes are one count in the rollups: they are reported under
`cache_creation.ephemeral_5m_input_tokens`, with `ephemeral_1h_input_tokens` 0. Costs are the
ledger's (the gateway's price book), in cents as exact decimal strings.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from governance import spend_limits
from governance.models import Organization, Project
from telemetry import reports, rollups
from telemetry.adminapi.base import (
    ERRORS,
    AdminApiError,
    AdminApiView,
    organization_for,
    query_limit,
    query_list,
)
from telemetry.dashboards import names as names_module

HOUR, DAY = dt.timedelta(hours=1), dt.timedelta(days=1)
# bucket_width -> (width, default limit, maximum limit), as Anthropic's.
USAGE_WIDTHS = {"1h": (HOUR, 24, 168), "1d": (DAY, 7, 31)}
COST_WIDTHS = {"1d": (DAY, 7, 31)}
USAGE_GROUPS = {"api_key_id": "key", "workspace_id": "project", "model": "model"}
UNTRACKED = (
    "service_tier",
    "context_window",
    "inference_geo",
    "speed",
    "account_id",
    "service_account_id",
)
USAGE_FIELDS = ("api_key_id", "workspace_id", "model", *UNTRACKED)
COST_GROUPS = ("workspace_id", "description")


@dataclass(frozen=True, slots=True)
class Buckets:
    starts: list[dt.datetime]
    width: dt.timedelta
    next_start: dt.datetime | None  # the first bucket of the next page, if any

    @property
    def end(self) -> dt.datetime:
        return self.starts[-1] + self.width if self.starts else dt.datetime.now(dt.UTC)


def _floor(moment: dt.datetime, width: dt.timedelta) -> dt.datetime:
    moment = moment.astimezone(dt.UTC).replace(minute=0, second=0, microsecond=0)
    return moment.replace(hour=0) if width == DAY else moment


def _page_start(token: str) -> dt.datetime:
    try:
        text = base64.urlsafe_b64decode(token.removeprefix("page_").encode() + b"==").decode()
        return reports.parse_moment(text, dt.UTC, "page")
    except (binascii.Error, UnicodeDecodeError, ValueError, reports.ReportError) as exc:
        raise AdminApiError(400, "page: not a page token of this report") from exc


def _page_token(start: dt.datetime) -> str:
    text = start.isoformat().replace("+00:00", "Z")
    return "page_" + base64.urlsafe_b64encode(text.encode()).decode()


def _moment(request: Request, name: str) -> dt.datetime | None:
    text = request.query_params.get(name)
    if not text:
        return None
    try:
        return reports.parse_moment(text, dt.UTC, name)
    except reports.ReportError as exc:
        raise AdminApiError(400, str(exc)) from exc


def buckets(request: Request, widths: dict[str, tuple[dt.timedelta, int, int]]) -> Buckets:
    """The page of time buckets asked for: from `starting_at` (or `page`) snapped down to the
    bucket, while buckets start before `ending_at` (default: now), at most `limit` of them."""
    name = request.query_params.get("bucket_width") or "1d"
    if name not in widths:
        allowed = " | ".join(f"'{w}'" for w in widths)
        hint = " (the gateway keeps hourly and daily rollups)" if name == "1m" else ""
        raise AdminApiError(400, f"bucket_width: expected {allowed}, received '{name}'{hint}")
    width, default, maximum = widths[name]
    start = _moment(request, "starting_at")
    if start is None:
        raise AdminApiError(400, "starting_at: Required")
    page = request.query_params.get("page")
    if page:
        start = _page_start(page)
    end = _moment(request, "ending_at") or timezone.now()
    limit = query_limit(request, default=default, maximum=maximum)
    first = _floor(start, width)
    starts: list[dt.datetime] = []
    moment = first
    while moment < end and len(starts) < limit:
        starts.append(moment)
        moment += width
    return Buckets(starts, width, moment if moment < end else None)


def _filters(request: Request, organization: Organization) -> dict[str, list[Any]]:
    filters: dict[str, list[Any]] = {}
    key_paths = query_list(request, "api_key_ids")
    if key_paths:
        keys = (spend_limits.key_by_path(organization, path) for path in key_paths)
        filters["key"] = [key.pk for key in keys if key is not None]
    workspaces = query_list(request, "workspace_ids")
    if workspaces:
        rows = Project.objects.filter(organization=organization, name__in=workspaces)
        filters["project"] = list(rows.values_list("pk", flat=True))
    models = query_list(request, "models")
    if models:
        filters["model"] = models
    return filters


def _reach(view: AdminApiView, organization: Organization) -> reports.Reach:
    for reach in reports.reaches(view.access):
        if reach.organization_id == organization.pk:
            return reach
    raise AdminApiError(404, "organization not found")


def read_table(
    view: AdminApiView,
    organization: Organization,
    span: Buckets,
    dimensions: Sequence[str],
    filters: dict[str, list[Any]],
) -> dict[dt.datetime, list[rollups.TableRow]]:
    """Rows per bucket start: the organization's cells (a team lead's: their teams')."""
    reach = _reach(view, organization)
    if reach.teams is not None:
        filters = {**filters, "team": sorted(reach.teams)}
    if not span.starts:
        return {}
    table = rollups.spend_table(
        organization.pk,
        span.starts[0],
        span.end,
        dimensions=dimensions,
        granularity="day" if span.width == DAY else "hour",
        filters=filters,
    )
    by_bucket: dict[dt.datetime, list[rollups.TableRow]] = defaultdict(list)
    for row in table:
        assert isinstance(row.bucket, dt.datetime)
        by_bucket[row.bucket.astimezone(dt.UTC)].append(row)
    return by_bucket


def _stamp(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def page_json(span: Buckets, results: dict[dt.datetime, list[dict[str, Any]]]) -> dict[str, Any]:
    return {
        "data": [
            {
                "starting_at": _stamp(start),
                "ending_at": _stamp(start + span.width),
                "results": results.get(start, []),
            }
            for start in span.starts
        ],
        "has_more": span.next_start is not None,
        "next_page": _page_token(span.next_start) if span.next_start else None,
    }


def _names(rows: dict[dt.datetime, list[rollups.TableRow]], dims: Sequence[str]) -> Any:
    def ids(name: str) -> list[Any]:
        if name not in dims:
            return []
        index = list(dims).index(name)
        return [row.groups[index] for lines in rows.values() for row in lines]

    return names_module.resolve(keys=ids("key"), projects=ids("project"))


def _label(names: Any, dimension: str, value: Any) -> str | None:
    if dimension == "model":
        return str(value) if value else None
    pk = int(value or 0)
    if not pk:
        return None
    return str(names.key(pk) if dimension == "key" else names.project(pk))


# --- usage ---------------------------------------------------------------------------------------

USAGE_RESULT = inline_serializer(
    name="MessagesUsageResult",
    fields={
        "uncached_input_tokens": serializers.IntegerField(),
        "cache_creation": serializers.DictField(child=serializers.IntegerField()),
        "cache_read_input_tokens": serializers.IntegerField(),
        "output_tokens": serializers.IntegerField(),
        "server_tool_use": serializers.DictField(child=serializers.IntegerField()),
        **{name: serializers.CharField(allow_null=True) for name in USAGE_FIELDS},
    },
)
BUCKET_PARAMETERS = [
    OpenApiParameter("starting_at", OpenApiTypes.DATETIME, required=True),
    OpenApiParameter("ending_at", OpenApiTypes.DATETIME),
    OpenApiParameter("limit", OpenApiTypes.INT),
    OpenApiParameter("page", OpenApiTypes.STR),
    OpenApiParameter("organization", OpenApiTypes.STR, description="Name or id."),
]


def _report_schema(name: str, result: Any) -> Any:
    bucket = inline_serializer(
        name=f"{name}Bucket",
        fields={
            "starting_at": serializers.DateTimeField(),
            "ending_at": serializers.DateTimeField(),
            "results": serializers.ListField(child=result),
        },
    )
    return inline_serializer(
        name=name,
        fields={
            "data": serializers.ListField(child=bucket),
            "has_more": serializers.BooleanField(),
            "next_page": serializers.CharField(allow_null=True),
        },
    )


class UsageReportView(AdminApiView):
    @extend_schema(
        operation_id="usage_report_messages",
        summary="Messages usage report (Anthropic's shape)",
        parameters=[
            *BUCKET_PARAMETERS,
            OpenApiParameter("bucket_width", OpenApiTypes.STR, enum=list(USAGE_WIDTHS)),
            OpenApiParameter("group_by[]", OpenApiTypes.STR, many=True, enum=list(USAGE_FIELDS)),
            OpenApiParameter("api_key_ids[]", OpenApiTypes.STR, many=True),
            OpenApiParameter("workspace_ids[]", OpenApiTypes.STR, many=True),
            OpenApiParameter("models[]", OpenApiTypes.STR, many=True),
        ],
        responses={200: _report_schema("MessagesUsageReport", USAGE_RESULT), **ERRORS},
        tags=["anthropic-admin-api"],
    )
    def get(self, request: Request) -> Response:
        organization = organization_for(request, self.access)
        groups = query_list(request, "group_by")
        unknown = [g for g in groups if g not in USAGE_FIELDS]
        if unknown:
            raise AdminApiError(400, f"group_by: invalid value '{unknown[0]}'")
        grouped = [g for g in USAGE_FIELDS if g in groups]
        dims = [USAGE_GROUPS[g] for g in grouped if g in USAGE_GROUPS]
        span = buckets(request, USAGE_WIDTHS)
        rows = read_table(self, organization, span, dims, _filters(request, organization))
        names = _names(rows, dims)
        results = {
            start: [_usage_result(row, dims, names) for row in lines]
            for start, lines in rows.items()
        }
        return Response(page_json(span, results))


def _usage_result(row: rollups.TableRow, dims: Sequence[str], names: Any) -> dict[str, Any]:
    values = dict(zip(dims, row.groups, strict=True))
    result: dict[str, Any] = {
        "uncached_input_tokens": row.input_tokens,
        "cache_creation": {
            "ephemeral_5m_input_tokens": row.cache_write_tokens,
            "ephemeral_1h_input_tokens": 0,
        },
        "cache_read_input_tokens": row.cache_read_tokens,
        "output_tokens": row.output_tokens,
        "server_tool_use": {"web_search_requests": 0},
    }
    for field in USAGE_FIELDS:
        dimension = USAGE_GROUPS.get(field, "")
        result[field] = _label(names, dimension, values[dimension]) if dimension in values else None
    return result


# --- cost ----------------------------------------------------------------------------------------

COST_RESULT = inline_serializer(
    name="CostReportResult",
    fields={
        "amount": serializers.CharField(help_text="USD cents as a decimal string."),
        "currency": serializers.CharField(),
        **{
            name: serializers.CharField(allow_null=True)
            for name in (
                "cost_type",
                "token_type",
                "description",
                "model",
                "context_window",
                "service_tier",
                "workspace_id",
            )
        },
    },
)


class CostReportView(AdminApiView):
    @extend_schema(
        operation_id="cost_report",
        summary="Cost report (Anthropic's shape)",
        parameters=[
            *BUCKET_PARAMETERS,
            OpenApiParameter("bucket_width", OpenApiTypes.STR, enum=list(COST_WIDTHS)),
            OpenApiParameter("group_by[]", OpenApiTypes.STR, many=True, enum=list(COST_GROUPS)),
        ],
        responses={200: _report_schema("CostReport", COST_RESULT), **ERRORS},
        tags=["anthropic-admin-api"],
    )
    def get(self, request: Request) -> Response:
        organization = organization_for(request, self.access)
        groups = query_list(request, "group_by")
        unknown = [g for g in groups if g not in COST_GROUPS]
        if unknown:
            raise AdminApiError(400, f"group_by: invalid value '{unknown[0]}'")
        dims = [
            d for g, d in (("workspace_id", "project"), ("description", "model")) if g in groups
        ]
        span = buckets(request, COST_WIDTHS)
        rows = read_table(self, organization, span, dims, {})
        names = _names(rows, dims)
        results = {
            start: [_cost_result(row, dims, names) for row in lines if row.cost_micros]
            for start, lines in rows.items()
        }
        return Response(page_json(span, results))


def _cost_result(row: rollups.TableRow, dims: Sequence[str], names: Any) -> dict[str, Any]:
    values = dict(zip(dims, row.groups, strict=True))
    model = _label(names, "model", values["model"]) if "model" in values else None
    by_description = "model" in values
    return {
        "amount": spend_limits.cents(row.cost_micros),
        "currency": spend_limits.CURRENCY,
        "cost_type": "tokens" if by_description else None,
        "token_type": None,
        "description": f"{model} usage" if by_description and model else None,
        "model": model,
        "context_window": None,
        "service_tier": None,
        "workspace_id": _label(names, "project", values["project"])
        if "project" in values
        else None,
    }
