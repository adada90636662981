"""The spend dashboard's "tools" breakdown: spend and calls per MCP server and tool.

Read from the same rollup cells as the models, at no extra cost: a tool call's cell has the
model "mcp:<server>/<tool>" (telemetry.rollups.common), so the page's "by model" series holds
every tool too.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from django.urls import reverse

from governance.money import format_usd, micros_to_usd
from telemetry import rollups

TOOLS_LABEL = "MCP tools"
CSV_HEADER = ["server", "tool", "calls", "errors", "cost_usd"]


@dataclass(frozen=True, slots=True)
class ToolLine:
    server: str
    tool: str
    calls: int
    errors: int
    cost_micros: int

    @property
    def cost(self) -> str:
        return format_usd(self.cost_micros)

    @property
    def logs(self) -> str:
        """The server's calls in the request log."""
        query = urlencode({"provider": f"mcp:{self.server}", "range": "30d"})
        return f"{reverse('telemetry:logs')}?{query}"


def tool_lines(points: Iterable[rollups.SeriesPoint]) -> list[ToolLine]:
    """Per (server, tool), the calls, failed calls and spend of the model series' tool cells,
    most expensive first."""
    totals: dict[tuple[str, str], rollups.Totals] = {}
    for point in points:
        found = rollups.tool_of(str(point.group or ""))
        if found is not None:
            counts = [getattr(point, name) for name in rollups.COUNTS]
            totals.setdefault(found, rollups.Totals()).add(counts)
    lines = [
        ToolLine(server, tool, t.requests, t.errors, t.cost_micros)
        for (server, tool), t in totals.items()
    ]
    return sorted(lines, key=lambda line: (-line.cost_micros, -line.calls, line.server, line.tool))


def model_label(model: Any) -> str:
    """A model series' label: every tool shares one (the tools have a table of their own)."""
    if rollups.tool_of(str(model or "")) is not None:
        return TOOLS_LABEL
    return str(model) if model else "unknown model"


def csv_rows(points: Iterable[rollups.SeriesPoint]) -> list[list[Any]]:
    return [
        [line.server, line.tool, line.calls, line.errors, f"{micros_to_usd(line.cost_micros):.6f}"]
        for line in tool_lines(points)
    ]
