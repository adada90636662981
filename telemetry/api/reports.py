"""GET /api/v1/reports/usage and /api/v1/reports/spend: grouped usage or spend over a time
range, as JSON or CSV, scoped to what the caller's roles read (telemetry.reports).

Authenticated by an API token (`Authorization: Bearer gwapi-…`) or a staff session. Rows are
paged (`limit`, `cursor`): the JSON `next`, or a `Link: <…>; rel="next"` header on CSV.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any, ClassVar

from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    inline_serializer,
)
from rest_framework import exceptions, serializers
from rest_framework.authentication import SessionAuthentication
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from governance.access import Access
from governance.api.authentication import ApiTokenAuthentication
from governance.api.permissions import HasGatewayRole
from telemetry import reports
from telemetry.api.renderers import CSVRenderer, json_errors

DEFAULT_LIMIT = 1000
MAX_LIMIT = 10_000


def _optional(field: type[serializers.Field[Any, Any, Any, Any]]) -> Any:
    return field(required=False, allow_null=True)


# One report row: the bucket, each grouped dimension (id and name), then the counts. Only the
# columns of the report's grouping are present (the page's `columns` lists them). Inline, since
# "errors" would shadow Serializer.errors on a class.
REPORT_ROW = inline_serializer(
    name="ReportRow",
    fields={
        "bucket_start": _optional(serializers.DateTimeField),
        **{
            name: _optional(serializers.IntegerField)
            for name in ("organization_id", "team_id", "project_id", "key_id")
        },
        **{
            name: _optional(serializers.CharField)
            for name in ("organization", "team", "project", "key", "model", "provider")
        },
        "session_id": _optional(serializers.CharField),
        "requests": serializers.IntegerField(),
        **{
            name: serializers.IntegerField(required=False)
            for name in (
                "errors",
                "input_tokens",
                "output_tokens",
                "cache_read_tokens",
                "cache_write_tokens",
            )
        },
        "cost_micros": serializers.IntegerField(
            help_text="Cost in micro-dollars (1 USD = 1,000,000)."
        ),
        "cost_usd": serializers.CharField(
            help_text='Exact cost in USD, six decimals ("12.345678").'
        ),
    },
)


class ReportPageSerializer(serializers.Serializer[Any]):
    columns = serializers.ListField(child=serializers.CharField())
    results = serializers.ListField(child=REPORT_ROW)
    next = serializers.URLField(allow_null=True, help_text="The next page, or null.")


class ErrorSerializer(serializers.Serializer[Any]):
    detail = serializers.CharField()


def _ids(name: str, description: str) -> OpenApiParameter:
    return OpenApiParameter(
        name,
        OpenApiTypes.STR,
        description=description + " (comma-separated ids).",
        pattern=r"^[1-9][0-9]{0,17}(,[1-9][0-9]{0,17})*$",
    )


PARAMETERS = [
    OpenApiParameter(
        "starting_at",
        OpenApiTypes.DATETIME,
        description="Start (RFC 3339, or a date in `tz`); default 30 days before `ending_at`.",
    ),
    OpenApiParameter(
        "ending_at", OpenApiTypes.DATETIME, description="End, exclusive (RFC 3339); default now."
    ),
    OpenApiParameter(
        "group_by",
        OpenApiTypes.STR,
        description=(
            "Comma-separated: organization, team, project, key, model, provider, session, and "
            "day or hour for time buckets. `session` goes with organization, team, key and day."
        ),
        pattern=r"^(organization|team|project|key|model|provider|session|day|hour)"
        r"(,(organization|team|project|key|model|provider|session|day|hour))*$",
    ),
    OpenApiParameter(
        "tz", OpenApiTypes.STR, description="Time zone of day buckets (IANA name); default UTC."
    ),
    _ids("organization", "Organization filter"),
    _ids("team", "Team filter"),
    _ids("project", "Project filter"),
    _ids("key", "Key filter"),
    OpenApiParameter("model", OpenApiTypes.STR, description="Served model filter (names)."),
    OpenApiParameter("provider", OpenApiTypes.STR, description="Provider filter (names)."),
    OpenApiParameter(
        "limit",
        OpenApiTypes.INT,
        description=f"Rows per page (1-{MAX_LIMIT}, default {DEFAULT_LIMIT}).",
    ),
    OpenApiParameter("cursor", OpenApiTypes.STR, description="The `next` page's cursor."),
    OpenApiParameter("format", OpenApiTypes.STR, enum=["json", "csv"], description="csv: CSV."),
]


class BadRequest(exceptions.APIException):
    """400 with `{"detail": "<message>"}`, as documented (a ValidationError would answer
    a dict of lists)."""

    status_code = 400
    default_code = "invalid"


def _limit(request: Request) -> int:
    text = request.query_params.get("limit")
    if text is None:
        return DEFAULT_LIMIT
    if not text.isdigit() or not 1 <= int(text) <= MAX_LIMIT:
        raise BadRequest(f"limit: an integer from 1 to {MAX_LIMIT}")
    return int(text)


def _offset(request: Request) -> int:
    text = request.query_params.get("cursor")
    if not text:
        return 0
    try:
        decoded = base64.urlsafe_b64decode(text.encode() + b"==").decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        decoded = ""
    if not decoded.startswith("o") or not decoded[1:].isdigit() or len(decoded) > 12:
        raise BadRequest("cursor: not a cursor of this report")
    return int(decoded[1:])


def _cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(f"o{offset}".encode()).decode().rstrip("=")


class ReportView(APIView):
    metric: ClassVar[str] = "usage"
    authentication_classes = [ApiTokenAuthentication, SessionAuthentication]
    permission_classes = [HasGatewayRole]
    renderer_classes = [JSONRenderer, CSVRenderer]
    csv_columns: list[str] | None = None

    def get_exception_handler(self) -> Any:
        return json_errors

    def get(self, request: Request) -> Response:
        try:
            query = reports.parse_query(request.query_params, now=timezone.now())
            reach = reports.narrow(reports.reaches(Access.of(request.user)), query.filters)
        except reports.ReportError as exc:
            raise BadRequest(str(exc)) from exc
        except reports.NotVisible as exc:
            raise exceptions.NotFound(str(exc)) from exc
        limit, offset = _limit(request), _offset(request)
        lines = reports.read(query, reach)
        page = lines[offset : offset + limit]
        self.csv_columns = reports.columns(query, self.metric)
        more = offset + limit < len(lines)
        next_url = None
        if more:
            params = request.query_params.copy()
            params["cursor"] = _cursor(offset + limit)
            next_url = request.build_absolute_uri(f"{request.path}?{params.urlencode()}")
        response = Response(
            {
                "columns": self.csv_columns,
                "results": reports.rows(query, page, self.metric),
                "next": next_url,
            }
        )
        if request.accepted_renderer.format == "csv":
            stamp = f"{query.start:%Y%m%d}-{query.end:%Y%m%d}"
            response["Content-Disposition"] = (
                f'attachment; filename="{self.metric}-report-{stamp}.csv"'
            )
            if next_url:
                response["Link"] = f'<{next_url}>; rel="next"'
        return response


RESPONSES = {
    (200, "application/json"): ReportPageSerializer,
    (200, "text/csv"): OpenApiResponse(OpenApiTypes.STR, description="The page as CSV."),
    400: ErrorSerializer,
    401: ErrorSerializer,
    403: ErrorSerializer,
    404: ErrorSerializer,
}


class UsageReportView(ReportView):
    metric = "usage"

    @extend_schema(
        operation_id="reports_usage",
        summary="Usage report",
        description=(
            "Requests, errors, tokens and cost over a time range, grouped as asked, read from "
            "the rollups. Organization roles read their organizations, team leads their teams."
        ),
        parameters=PARAMETERS,
        responses=RESPONSES,
        tags=["reports"],
    )
    def get(self, request: Request) -> Response:
        return super().get(request)


class SpendReportView(ReportView):
    metric = "spend"

    @extend_schema(
        operation_id="reports_spend",
        summary="Spend report",
        description=(
            "Requests and cost (micro-dollars and exact USD) over a time range, grouped as "
            "asked, read from the rollups; scoped like the usage report."
        ),
        parameters=PARAMETERS,
        responses=RESPONSES,
        tags=["reports"],
    )
    def get(self, request: Request) -> Response:
        return super().get(request)
