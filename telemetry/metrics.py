"""Prometheus metrics: what each finished request adds, budget gauges, and the /metrics view.

Series (counters end in `_total` on the wire). L = organization, team, key, model, provider:

- gateway_requests_total{L, status}
- gateway_tokens_total{L, type}: type is input, output, cache_read, cache_write_5m, cache_write_1h
- gateway_cost_usd_total{L}
- gateway_errors_total{L, error_type}
- gateway_failovers_total{organization, team, model, provider}: one per attempt after the first
- histograms {provider, model}: gateway_request_duration_seconds (whole request),
  gateway_time_to_first_byte_seconds, gateway_upstream_duration_seconds (from the first
  upstream attempt on); gateway_overhead_seconds (no labels; see below)
- gauges gateway_budget_spent_usd / _limit_usd / _remaining_usd
  {budget, organization, scope, owner, period, models}
- MCP tool calls (T = organization, team, key, server, tool): gateway_mcp_tool_calls_total{T,
  status, error_type} (status 200 with error_type tool_error: the tool reported a failure),
  gateway_mcp_tool_cost_usd_total{T}, gateway_mcp_tool_duration_seconds{server, tool}
- gauges gateway_usage_spooled_events / gateway_usage_dead_letter_events (no labels): usage
  events waiting on this host's disk (telemetry/exposition.py)
- per deployment {provider, model} (model: the upstream model; proxy/health/, the failover
  breaker): gateway_upstream_attempts_total{..., status, outcome} (status "none": no answer;
  outcome ok, or failed: what fails over), gateway_deployment_failovers_total (a failed attempt
  the request moved on from), gateway_deployment_skipped_total (requests that skipped it while
  it cooled down), gateway_deployment_cooldowns_total (breaker trips); gauges
  gateway_deployment_cooling_down (1 while the breaker is open) and
  gateway_deployment_consecutive_failures, read from the health state at scrape time
  (telemetry/provider_health.py: Redis, so the same from every worker, or this process's)

`model` is the model that answered (or, for a refusal, the model asked for). Money is counted in
integer micro-dollars everywhere else; it becomes float dollars only here, at exposition.

Gateway overhead is the time from the request's arrival (body read) to the first upstream attempt:
authentication, parsing, policy and admission. Bookkeeping after the response (settling counters,
metering) runs after the client has its last byte, so it is not added to what the client waits
for. Upstream duration is the request's duration minus that overhead (so it includes failover
attempts).

Several worker processes: set PROMETHEUS_MULTIPROC_DIR to an empty, writable directory before the
workers start (and empty it when the server restarts). Each process then writes its samples to
files there and /metrics, served by whichever worker, adds up every process's files
(prometheus_client multiprocess mode). Without it each process exposes its own numbers.

Budget gauges are computed at scrape time (telemetry/budget_gauges.py).

Cardinality guard (GATEWAY_METRICS_MAX_KEYS, default 200): the `key` label names at most that many
keys per process, first come; once full, a further key is named only if it is among the N keys
that spent most over the last 7 days (read from the rollups in a background thread, at most every
GATEWAY_METRICS_TOP_KEYS_REFRESH_SECONDS); every other key is reported as `other`. A key once
named stays named, so a key's counts never move between series; a process names at most 2N keys.
`model` and `error_type` are capped the same way (first 100 values, then `other`), because a
refused request carries whatever model name the client sent. `tool` is capped at 500 names per
process (per server and tool); a tool call refused as unknown is labelled `unknown`, never with
the name the client guessed. Key-scoped budgets are exported for
the N most spent only; organization, team and project budgets are always exported.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.utils import timezone
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
)

logger = logging.getLogger("gateway.metrics")

OTHER = "other"
MAX_LABEL_VALUES = 100
MAX_TOOL_LABEL_VALUES = 500
TOP_KEYS_WINDOW = dt.timedelta(days=7)
REQUEST_LABELS = ("organization", "team", "key", "model", "provider")
TOKEN_TYPES = ("input", "output", "cache_read", "cache_write_5m", "cache_write_1h")
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600)
OVERHEAD_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1)

REGISTRY = CollectorRegistry()
REQUESTS = Counter(
    "gateway_requests", "Finished requests.", [*REQUEST_LABELS, "status"], registry=REGISTRY
)
TOKENS = Counter("gateway_tokens", "Tokens by type.", [*REQUEST_LABELS, "type"], registry=REGISTRY)
COST = Counter("gateway_cost_usd", "Cost in US dollars.", REQUEST_LABELS, registry=REGISTRY)
ERRORS = Counter(
    "gateway_errors",
    "Failed requests by error type.",
    [*REQUEST_LABELS, "error_type"],
    registry=REGISTRY,
)
FAILOVERS = Counter(
    "gateway_failovers",
    "Upstream attempts after the first (one per failover).",
    ["organization", "team", "model", "provider"],
    registry=REGISTRY,
)
DURATION = Histogram(
    "gateway_request_duration_seconds",
    "Whole request, arrival to last byte.",
    ["provider", "model"],
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
TTFB = Histogram(
    "gateway_time_to_first_byte_seconds",
    "Arrival to the first response byte sent.",
    ["provider", "model"],
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
UPSTREAM = Histogram(
    "gateway_upstream_duration_seconds",
    "From the first upstream attempt to the end.",
    ["provider", "model"],
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
OVERHEAD = Histogram(
    "gateway_overhead_seconds",
    "Arrival to the first upstream attempt (the gateway's own time).",
    buckets=OVERHEAD_BUCKETS,
    registry=REGISTRY,
)
# MCP tool calls (observe.tool_call_finished).
TOOL_LABELS = ("organization", "team", "key", "server", "tool")
TOOL_CALLS = Counter(
    "gateway_mcp_tool_calls",
    "MCP tool calls by server, tool, status and error type.",
    [*TOOL_LABELS, "status", "error_type"],
    registry=REGISTRY,
)
TOOL_COST = Counter(
    "gateway_mcp_tool_cost_usd",
    "MCP tool call cost in US dollars.",
    TOOL_LABELS,
    registry=REGISTRY,
)
TOOL_DURATION = Histogram(
    "gateway_mcp_tool_duration_seconds",
    "One MCP tool call, arrival to result.",
    ["server", "tool"],
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
# Per deployment: provider name and upstream model (proxy/health/).
DEPLOYMENT_LABELS = ("provider", "model")
ATTEMPTS = Counter(
    "gateway_upstream_attempts",
    "Upstream attempts by deployment, answer status and outcome (failed: what fails over).",
    [*DEPLOYMENT_LABELS, "status", "outcome"],
    registry=REGISTRY,
)
DEPLOYMENT_EVENTS = {
    "failover": Counter(
        "gateway_deployment_failovers",
        "Failed attempts on a deployment after which the request moved to the next one.",
        DEPLOYMENT_LABELS,
        registry=REGISTRY,
    ),
    "skipped": Counter(
        "gateway_deployment_skipped",
        "Requests that skipped a deployment because it was cooling down.",
        DEPLOYMENT_LABELS,
        registry=REGISTRY,
    ),
    "cooldown": Counter(
        "gateway_deployment_cooldowns",
        "Cooldowns started: the deployment's breaker opened.",
        DEPLOYMENT_LABELS,
        registry=REGISTRY,
    ),
}


# --- cardinality guards ----------------------------------------------------------------------


class LabelGuard:
    """The first `limit` distinct values pass; later ones become "other"."""

    def __init__(self, limit: int = MAX_LABEL_VALUES) -> None:
        self.limit = limit
        self._seen: set[str] = set()

    def __call__(self, value: str) -> str:
        if value in self._seen:
            return value
        if len(self._seen) < self.limit:
            self._seen.add(value)
            return value
        return OTHER


class KeyGuard:
    """Which keys get their own `key` label (module docstring: cardinality guard)."""

    def __init__(self, loader: Callable[[int], Iterable[int]]) -> None:
        self._loader = loader
        self._named: set[int] = set()
        self._top: frozenset[int] = frozenset()
        self._loaded_at = -math.inf
        self._refreshing = threading.Lock()

    def label(self, key_id: int | None, name: str) -> str:
        if key_id is None:
            return ""
        if key_id in self._named:
            return name
        limit = settings.GATEWAY_METRICS_MAX_KEYS
        if len(self._named) < limit or (key_id in self._top and len(self._named) < 2 * limit):
            self._named.add(key_id)
            return name
        self._refresh_in_background()
        return OTHER

    def refresh(self) -> None:
        """Load the top keys now (the background refresh runs this in a thread)."""
        try:
            self._top = frozenset(self._loader(settings.GATEWAY_METRICS_MAX_KEYS))
        finally:
            self._loaded_at = time.monotonic()

    def _refresh_in_background(self) -> None:
        due = (
            time.monotonic() - self._loaded_at >= settings.GATEWAY_METRICS_TOP_KEYS_REFRESH_SECONDS
        )
        if due and self._refreshing.acquire(blocking=False):
            threading.Thread(target=self._refresh_and_release, daemon=True).start()

    def _refresh_and_release(self) -> None:
        from django.db import connection

        try:
            self.refresh()
        except Exception:
            logger.warning("could not load the top keys for metric labels", exc_info=True)
        finally:
            connection.close()
            self._refreshing.release()


def top_key_ids(limit: int, now: dt.datetime | None = None) -> list[int]:
    """The keys that spent most over the last 7 days, from the daily rollups."""
    from django.db.models import Sum

    from telemetry.models import SpendRollup

    since = (now or timezone.now()) - TOP_KEYS_WINDOW
    rows = (
        SpendRollup.objects.filter(
            granularity=SpendRollup.Granularity.DAY, bucket_start__gte=since, key_id__gt=0
        )
        .values("key_id")
        .annotate(cost=Sum("cost_micros"))
        .order_by("-cost", "key_id")[:limit]
    )
    return [int(row["key_id"]) for row in rows]


KEYS = KeyGuard(top_key_ids)
MODELS = LabelGuard()
ERROR_TYPES = LabelGuard()
# Tool names come from the servers an admin registered (3 servers of 50 tools is 150 names);
# a name a client guessed never reaches a label (UNKNOWN_TOOL).
TOOLS = LabelGuard(MAX_TOOL_LABEL_VALUES)
UNKNOWN_TOOL = "unknown"


# --- recording (hot path: no I/O) ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Names:
    """Display names of the request's owners, from its KeyPolicy."""

    organization: str
    team: str
    key: str


_children: dict[tuple[object, tuple[str, ...]], Any] = {}


def _child(metric: object, labels: tuple[str, ...]) -> Any:
    """metric.labels(*labels), remembered: labels() validates and locks on every call (a few
    microseconds, about ten times per request); a dict lookup does not. Bounded like the labels."""
    child = _children.get((metric, labels))
    if child is None:
        child = _children[metric, labels] = metric.labels(*labels)  # type: ignore[attr-defined]
    return child


class _Cell:
    """The children of one request cell (organization, team, key, model, provider), each made
    on first use: a request finds them with one dict lookup instead of guarding its labels and
    building a label tuple per series (about 3 µs of every request's CPU)."""

    __slots__ = ("cost", "duration", "labels", "requests", "tokens", "ttfb", "upstream")

    def __init__(self, labels: tuple[str, str, str, str, str]) -> None:
        self.labels = labels
        self.requests: dict[int, Any] = {}  # by status
        self.tokens: list[Any] = [None] * len(TOKEN_TYPES)
        self.cost: Any = None
        route = (labels[4], labels[3])  # provider, model
        self.duration = _child(DURATION, route)
        self.ttfb: Any = None
        self.upstream: Any = None

    def request(self, status: int) -> Any:
        child = self.requests.get(status)
        if child is None:
            child = self.requests[status] = _child(REQUESTS, (*self.labels, str(status)))
        return child

    def token(self, index: int) -> Any:
        child = self.tokens[index]
        if child is None:
            child = self.tokens[index] = _child(TOKENS, (*self.labels, TOKEN_TYPES[index]))
        return child


_cells: dict[tuple[str, str, str, int | None, str, str], _Cell] = {}
MAX_CELLS = 10_000
TOKEN_FIELD_INDEXES = tuple((index, f"{kind}_tokens") for index, kind in enumerate(TOKEN_TYPES))


def _cell(names: Names, key_id: int | None, model: str, provider: str) -> _Cell:
    raw = (names.organization, names.team, names.key, key_id, model, provider)
    cell = _cells.get(raw)
    if cell is not None:
        return cell
    key = KEYS.label(key_id, names.key)
    cell = _Cell((names.organization, names.team, key, MODELS(model), provider))
    # A key labelled "other" may be named later (cardinality guard): only named cells are kept.
    if key != OTHER and len(_cells) < MAX_CELLS:
        _cells[raw] = cell
    return cell


def record_request(
    event: Mapping[str, Any], names: Names, *, total: float, overhead: float | None
) -> None:
    """Add one finished request (a usage event) to the metrics. Durations in seconds."""
    cell = _cell(
        names,
        event.get("key_id"),
        event.get("served_model") or event.get("routed_model") or event.get("requested_model", ""),
        event.get("provider") or "",
    )
    status = int(event.get("status") or 0)
    cell.request(status).inc()
    for index, field in TOKEN_FIELD_INDEXES:
        count = event.get(field)
        if count:
            cell.token(index).inc(count)
    cost_micros = event.get("cost_micros")
    if cost_micros:
        if cell.cost is None:
            cell.cost = _child(COST, cell.labels)
        cell.cost.inc(cost_micros / 1_000_000)
    error_type = event.get("error_type") or ""
    if status >= 400 or error_type:
        _child(ERRORS, (*cell.labels, ERROR_TYPES(error_type or f"http_{status}"))).inc()
    attempts = event.get("attempts") or 0
    organization, team, _, model, provider = cell.labels
    if attempts > 1:
        _child(FAILOVERS, (organization, team, model, provider)).inc(attempts - 1)
    cell.duration.observe(total)
    ttfb_ms = event.get("ttfb_ms")
    if ttfb_ms is not None:
        if cell.ttfb is None:
            cell.ttfb = _child(TTFB, (provider, model))
        cell.ttfb.observe(ttfb_ms / 1000)
    if overhead is not None:
        OVERHEAD.observe(overhead)
        if cell.upstream is None:
            cell.upstream = _child(UPSTREAM, (provider, model))
        cell.upstream.observe(max(total - overhead, 0.0))


def record_tool_call(event: Mapping[str, Any], names: Names, *, total: float) -> None:
    """Add one finished MCP tool call (its usage event) to the metrics. `total` in seconds."""
    server = str(event.get("tool_server") or "")
    tool = str(event.get("tool_name") or "")
    if not server:  # refused as unknown: the name is whatever the client sent
        tool = UNKNOWN_TOOL
    elif TOOLS(f"{server}/{tool}") == OTHER:  # capped per server and tool
        tool = OTHER
    key = KEYS.label(event.get("key_id"), names.key)
    cell = (names.organization, names.team, key, server, tool)
    status = str(int(event.get("status") or 0))
    error_type = ERROR_TYPES(str(event.get("error_type") or ""))
    _child(TOOL_CALLS, (*cell, status, error_type)).inc()
    cost_micros = event.get("cost_micros")
    if cost_micros:
        _child(TOOL_COST, cell).inc(cost_micros / 1_000_000)
    if server:
        _child(TOOL_DURATION, (server, tool)).observe(total)


_attempt_children: dict[tuple[str, str, int, bool], Any] = {}


def record_attempt(provider: str, model: str, *, status: int, ok: bool) -> None:
    """One upstream attempt (status 0: no answer). Once per request: the child is remembered
    by the raw values, so the usual case is one dict lookup."""
    child = _attempt_children.get((provider, model, status, ok))
    if child is None:
        labels = (
            provider,
            MODELS(model),
            str(status) if status else "none",
            "ok" if ok else "failed",
        )
        child = _child(ATTEMPTS, labels)
        if len(_attempt_children) < 10_000:
            _attempt_children[provider, model, status, ok] = child
    child.inc()


def record_deployment_event(event: str, provider: str, model: str) -> None:
    """A failover from, a skip of, or a cooldown of a deployment (DEPLOYMENT_EVENTS)."""
    _child(DEPLOYMENT_EVENTS[event], (provider, MODELS(model))).inc()
