"""CSV for report endpoints: `?format=csv` or `Accept: text/csv`."""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from typing import Any

from django.http import JsonResponse
from rest_framework.renderers import BaseRenderer
from rest_framework.views import exception_handler

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(value: Any) -> Any:
    """Text a spreadsheet would run as a formula is quoted (names are user-chosen)."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


class CSVRenderer(BaseRenderer):
    """The `results` of a report page as CSV; the columns come from the view's `csv_columns`
    (so an empty report still has its header)."""

    media_type = "text/csv"
    format = "csv"
    charset = "utf-8"

    def render(
        self,
        data: Any,
        accepted_media_type: str | None = None,
        renderer_context: Mapping[str, Any] | None = None,
    ) -> bytes:
        view = (renderer_context or {}).get("view")
        results = data.get("results", []) if isinstance(data, Mapping) else []
        columns = list(getattr(view, "csv_columns", None) or (results[0] if results else []))
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\r\n")
        writer.writerow(columns)
        for row in results:
            writer.writerow([spreadsheet_safe(row.get(column)) for column in columns])
        return buffer.getvalue().encode(self.charset)


def json_errors(exc: Exception, context: dict[str, Any]) -> JsonResponse | None:
    """DRF's error answers, always as JSON: a CSV client gets a readable error, not a CSV
    of it."""
    response = exception_handler(exc, context)
    if response is None:
        return None
    answer = JsonResponse(response.data, status=response.status_code, safe=False)
    for name, value in response.items():
        if name.lower() != "content-type":
            answer[name] = value
    return answer
