"""Datadog: cost, tokens, requests and budget utilisation, pushed to the metrics API v2.

`push_datadog_metrics()` runs every minute (a Celery beat task) and does nothing unless
DD_API_KEY is set. It posts to `https://api.<DD_SITE>/api/v2/series` (DD_SITE defaults to
datadoghq.com; DD_API_URL replaces the base URL, e.g. for a proxy).

Series, tagged organization, team, key, model and provider where they apply:
- gateway.llm.requests, gateway.llm.errors, gateway.llm.cost_usd (count)
- gateway.llm.tokens (count; token_type: input, output, cache_read, cache_write_5m,
  cache_write_1h)
- gateway.mcp.tool_calls, gateway.mcp.tool_errors, gateway.mcp.cost_usd (count): MCP tool
  calls (ledger route "mcp.tool"), tagged organization, team, key, server and tool instead of
  model and provider; they are not in the gateway.llm series. Total spend is the two costs.
- gateway.budget.spent_usd, gateway.budget.limit_usd, gateway.budget.utilization (gauge, %),
  tagged budget_id, scope, owner, period, organization, and team, key and model (the budget's
  model patterns) when the budget has them; from the budget period records, as /metrics does.

Each ledger row is counted in exactly one push. A push covers the ledger rows above a watermark
(RollupCursor "datadog") up to a settled horizon ("datadog.horizon": ids are visible only once
their transaction commits, so the horizon lags the newest id by SETTLE_SECONDS, as the rollups
do). Before sending, the push records its upper id and its timestamp ("datadog.pending": the
row's id and updated_at); the watermark moves only when every payload was accepted. A push that
failed halfway, or a second worker running at the same moment, sends the same rows with the same
timestamp again, and Datadog keeps one value per series, tag set and timestamp (the latest), so
the payloads that had already arrived are overwritten with themselves, not counted twice. Past
MAX_STAMP_AGE (Datadog ignores points more than an hour old) a pending push is re-stamped now.
The first push starts at the ledger's current end: history is not replayed into Datadog.

Payloads stay under 512,000 bytes (the intake's limit); 429 and 5xx answers and network errors
are retried with exponential backoff (honouring Retry-After), at most MAX_ATTEMPTS times. Other
4xx answers are not retried: 401/403 stop the push (a wrong key or site) and leave the rows for
later; a 400 or 413 drops that one payload (it would fail again) and is logged. The API key is
sent as the DD-API-KEY header only and never logged.

The `key` tag follows /metrics' cardinality guard: the GATEWAY_METRICS_MAX_KEYS keys that spent
most over the last 7 days (then the biggest spenders of the push) are named, others are "other".
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
from django.conf import settings
from django.db import transaction
from django.db.models import Count, Max, Q, Sum, Value
from django.db.models.functions import Coalesce, NullIf
from django.utils import timezone

from governance.models import Organization, Team, VirtualKey
from telemetry import budget_gauges, metrics
from telemetry.models import RollupCursor, UsageRecord
from telemetry.rollups import TOOL_ROUTE

logger = logging.getLogger("gateway.datadog")

SERIES_PATH = "/api/v2/series"
MAX_PAYLOAD_BYTES = 512_000
CURSOR, HORIZON, PENDING = "datadog", "datadog.horizon", "datadog.pending"
SETTLE_SECONDS = 30.0
MAX_STAMP_AGE = dt.timedelta(minutes=50)
MAX_ATTEMPTS = 4
BACKOFF_SECONDS = 1.0
MAX_RETRY_AFTER = 30.0
TIMEOUT_SECONDS = 10.0
COUNT, GAUGE = 1, 3  # MetricIntakeType
TOKEN_TYPES = metrics.TOKEN_TYPES
TAG_UNSAFE = re.compile(r"[^a-z0-9_:./\-]")

Series = dict[str, Any]
Tags = tuple[str, ...]


@dataclass(frozen=True)
class Batch:
    start: int  # exclusive
    end: int  # inclusive; == start when there is nothing new
    stamp: int  # unix seconds, the points' timestamp
    interval: int  # seconds the counts cover (about the time since the previous push)


@dataclass
class PushResult:
    enabled: bool = True
    rows: int = 0
    series: int = 0
    payloads: int = 0
    complete: bool = True


class PushFailed(Exception):
    """The intake refused or could not be reached after every retry."""


# --- the push --------------------------------------------------------------------------------


def push_datadog_metrics(
    *,
    client: httpx.Client | None = None,
    settle_seconds: float = SETTLE_SECONDS,
    max_bytes: int = MAX_PAYLOAD_BYTES,
    sleep: Callable[[float], None] = time.sleep,
) -> PushResult:
    """Send what the ledger gained since the last push, and the budgets' state, to Datadog."""
    if not settings.DD_API_KEY:
        return PushResult(enabled=False)
    batch = claim_batch(settle_seconds)
    usage, rows = usage_series(batch)
    series = usage + budget_series(batch.stamp)
    payloads = split_payloads(series, max_bytes)
    result = PushResult(rows=rows, series=len(series))
    http = client or httpx.Client(timeout=TIMEOUT_SECONDS)
    try:
        for payload in payloads:
            post_payload(http, payload, sleep=sleep)
            result.payloads += 1
    except PushFailed as failure:
        logger.warning("Datadog push incomplete, retried on the next run: %s", failure)
        result.complete = False
        return result
    finally:
        if client is None:
            http.close()
    if batch.end > batch.start:
        _complete(batch)
    return result


def intake_url() -> str:
    base = settings.DD_API_URL or f"https://api.{settings.DD_SITE}"
    return base.rstrip("/") + SERIES_PATH


def post_payload(
    http: httpx.Client, payload: bytes, *, sleep: Callable[[float], None] = time.sleep
) -> None:
    """POST one payload; retry 429, 5xx and network errors with backoff. Raises PushFailed."""
    headers = {"DD-API-KEY": settings.DD_API_KEY, "Content-Type": "application/json"}
    problem = ""
    for attempt in range(1, MAX_ATTEMPTS + 1):
        retry_after = None
        try:
            response = http.post(intake_url(), content=payload, headers=headers)
        except httpx.HTTPError as exc:
            problem = f"network error {type(exc).__name__}"
        else:
            if response.status_code < 300:
                return
            problem = f"HTTP {response.status_code} {response.text[:300]!r}"
            if response.status_code in (400, 413):
                logger.error("Datadog refused a payload, dropped: %s", problem)
                return
            if response.status_code != 429 and response.status_code < 500:
                raise PushFailed(problem)
            retry_after = _retry_after(response)
        if attempt < MAX_ATTEMPTS:
            sleep(retry_after if retry_after is not None else BACKOFF_SECONDS * 2 ** (attempt - 1))
    raise PushFailed(f"{problem} after {MAX_ATTEMPTS} attempts")


def _retry_after(response: httpx.Response) -> float | None:
    try:
        return min(max(float(response.headers["retry-after"]), 0.0), MAX_RETRY_AFTER)
    except (KeyError, ValueError):
        return None


# --- which rows a push covers ----------------------------------------------------------------


def _latest_id() -> int:
    return int(UsageRecord.objects.aggregate(top=Max("id"))["top"] or 0)


def _ensure_cursors() -> None:
    # Outside the claim's transaction: get_or_create recovers from a concurrent insert.
    if not RollupCursor.objects.filter(name=CURSOR).exists():
        latest = _latest_id()
        RollupCursor.objects.get_or_create(name=CURSOR, defaults={"last_usage_id": latest})
        RollupCursor.objects.get_or_create(name=HORIZON, defaults={"last_usage_id": latest})
    RollupCursor.objects.get_or_create(name=HORIZON)
    RollupCursor.objects.get_or_create(name=PENDING)


def claim_batch(settle_seconds: float = SETTLE_SECONDS) -> Batch:
    """The rows this push covers and its timestamp (a failed push's again, if there is one)."""
    _ensure_cursors()
    with transaction.atomic():
        cursor = RollupCursor.objects.select_for_update().get(name=CURSOR)
        pending = RollupCursor.objects.get(name=PENDING)
        now = timezone.now()
        start = cursor.last_usage_id
        if pending.last_usage_id > start and pending.updated_at > now - MAX_STAMP_AGE:
            return _batch(cursor, pending.last_usage_id, pending.updated_at)
        upper = _settled_id(settle_seconds)
        if upper <= start:
            return _batch(cursor, start, now)
        pending.last_usage_id = upper
        pending.save(update_fields=["last_usage_id", "updated_at"])
        return _batch(cursor, upper, pending.updated_at)


def _batch(cursor: RollupCursor, end: int, stamp: dt.datetime) -> Batch:
    # Derived from stored times only, so a batch sent again is byte for byte the same.
    interval = int((stamp - cursor.updated_at).total_seconds())
    return Batch(cursor.last_usage_id, end, int(stamp.timestamp()), min(max(interval, 1), 3600))


def _settled_id(settle_seconds: float) -> int:
    """The highest id that is surely committed; remembers the current newest id for later."""
    latest = _latest_id()
    if settle_seconds <= 0:
        return latest
    horizon = RollupCursor.objects.get(name=HORIZON)
    if horizon.updated_at > timezone.now() - dt.timedelta(seconds=settle_seconds):
        return horizon.last_usage_id
    settled = horizon.last_usage_id
    horizon.last_usage_id = max(latest, settled)
    horizon.save(update_fields=["last_usage_id", "updated_at"])
    return settled


def _complete(batch: Batch) -> None:
    with transaction.atomic():
        cursor = RollupCursor.objects.select_for_update().get(name=CURSOR)
        if cursor.last_usage_id < batch.end:
            cursor.last_usage_id = batch.end
            cursor.save(update_fields=["last_usage_id", "updated_at"])


# --- series ----------------------------------------------------------------------------------


def tag(name: str, value: object) -> str:
    """A Datadog tag: lower case, safe characters, at most 200 characters."""
    return TAG_UNSAFE.sub("_", f"{name}:{value}".lower())[:200]


def _tool_groups(batch: Batch) -> list[dict[str, Any]]:
    """The batch's MCP tool calls summed per (organization, team, key, server, tool)."""
    rows = UsageRecord.objects.filter(id__gt=batch.start, id__lte=batch.end, route=TOOL_ROUTE)
    groups = (
        rows.values("organization_id", "team_id", "key_id", "key_name", "tool_server", "tool_name")
        .annotate(
            n_requests=Count("id"),
            n_errors=Count("id", filter=Q(status__gte=400) | ~Q(error_type="")),
            n_cost_micros=Sum("cost_micros"),
        )
        .order_by()
    )
    return [dict(group) for group in groups]


def _usage_groups(batch: Batch) -> list[dict[str, Any]]:
    """The batch's requests (MCP tool calls aside) summed per (organization, team, key, model,
    provider); sums are n_*."""
    rows = UsageRecord.objects.filter(id__gt=batch.start, id__lte=batch.end).exclude(
        route=TOOL_ROUTE
    )
    groups = (
        rows.annotate(
            model=Coalesce(
                NullIf("served_model", Value("")),
                NullIf("routed_model", Value("")),
                "requested_model",
            )
        )
        .values("organization_id", "team_id", "key_id", "key_name", "model", "provider")
        .annotate(
            n_requests=Count("id"),
            n_errors=Count("id", filter=Q(status__gte=400) | ~Q(error_type="")),
            n_cost_micros=Sum("cost_micros"),
            **{f"n_{kind}_tokens": Sum(f"{kind}_tokens") for kind in TOKEN_TYPES},
        )
        .order_by()
    )
    return [dict(group) for group in groups]


def _names(groups: list[dict[str, Any]]) -> tuple[dict[int, str], dict[int, str], dict[int, str]]:
    def ids(field: str) -> set[int]:
        return {g[field] for g in groups if g[field]}

    orgs = dict(
        Organization.objects.filter(id__in=ids("organization_id")).values_list("id", "name")
    )
    teams = dict(Team.objects.filter(id__in=ids("team_id")).values_list("id", "name"))
    keys = {
        k.pk: str(k)
        for k in VirtualKey.objects.filter(id__in=ids("key_id")).select_related("parent")
    }
    return orgs, teams, keys


def _named_keys(groups: list[dict[str, Any]]) -> set[int]:
    limit = settings.GATEWAY_METRICS_MAX_KEYS
    named = set(metrics.top_key_ids(limit))
    spend: dict[int, int] = defaultdict(int)
    for group in groups:
        if group["key_id"]:
            spend[group["key_id"]] += int(group["n_cost_micros"] or 0)
    for key_id in sorted(spend, key=lambda k: (-spend[k], k)):
        if len(named) >= limit:
            break
        named.add(key_id)
    return named


def usage_series(batch: Batch) -> tuple[list[Series], int]:
    """Count series for the batch's ledger rows, and how many rows they cover."""
    if batch.end <= batch.start:
        return [], 0
    groups, tool_groups = _usage_groups(batch), _tool_groups(batch)
    orgs, teams, keys = _names(groups + tool_groups)
    named = _named_keys(groups + tool_groups)
    totals: dict[tuple[str, Tags], int] = defaultdict(int)

    def owner_tags(group: dict[str, Any]) -> dict[str, object]:
        key_id = group["key_id"]
        key = (keys.get(key_id) or group["key_name"]) if key_id in named else metrics.OTHER
        return {
            "organization": orgs.get(group["organization_id"], group["organization_id"]),
            "team": teams.get(group["team_id"], group["team_id"]),
            "key": key if key_id else "",
        }

    for group in tool_groups:
        tags = _tags(**owner_tags(group), server=group["tool_server"], tool=group["tool_name"])
        totals["gateway.mcp.tool_calls", tags] += int(group["n_requests"])
        totals["gateway.mcp.tool_errors", tags] += int(group["n_errors"])
        totals["gateway.mcp.cost_usd", tags] += int(group["n_cost_micros"] or 0)
    for group in groups:
        tags = _tags(**owner_tags(group), model=group["model"], provider=group["provider"])
        totals["gateway.llm.requests", tags] += int(group["n_requests"])
        totals["gateway.llm.errors", tags] += int(group["n_errors"])
        totals["gateway.llm.cost_usd", tags] += int(group["n_cost_micros"] or 0)
        for kind in TOKEN_TYPES:
            totals["gateway.llm.tokens", (*tags, tag("token_type", kind))] += int(
                group[f"n_{kind}_tokens"] or 0
            )
    rows = sum(int(g["n_requests"]) for g in groups + tool_groups)
    series = [
        _count(name, tags, value, batch)
        for (name, tags), value in sorted(totals.items())
        # Zero tokens, errors or cost: nothing to say.
        if value or name in ("gateway.llm.requests", "gateway.mcp.tool_calls")
    ]
    return series, rows


def _tags(**values: object) -> Tags:
    return tuple(tag(name, value) for name, value in values.items() if value not in (None, ""))


UNITS = {
    "gateway.llm.requests": "request",
    "gateway.llm.errors": "error",
    "gateway.llm.cost_usd": "dollar",
    "gateway.mcp.tool_calls": "request",
    "gateway.mcp.tool_errors": "error",
    "gateway.mcp.cost_usd": "dollar",
}
DOLLARS = frozenset({"gateway.llm.cost_usd", "gateway.mcp.cost_usd"})


def _count(name: str, tags: Tags, value: int, batch: Batch) -> Series:
    # Cost is summed in integer micro-dollars and becomes dollars only here, on the wire.
    number = value / 1_000_000 if name in DOLLARS else value
    series: Series = {
        "metric": name,
        "type": COUNT,
        "interval": batch.interval,
        "points": [{"timestamp": batch.stamp, "value": number}],
        "tags": list(tags),
    }
    if name in UNITS:
        series["unit"] = UNITS[name]
    return series


def budget_series(stamp: int) -> list[Series]:
    """Gauges of every budget's spend, limit and utilisation in its current period."""
    series: list[Series] = []
    for status in budget_gauges.budget_statuses():
        if status.spent_micros is None:
            continue
        tags = [
            tag("budget_id", status.budget_id),
            *_tags(
                organization=status.organization,
                scope=status.scope,
                owner=status.owner,
                period=status.period,
                team=status.team,
                key=status.key,
                model=status.models,
            ),
        ]
        used = status.spent_micros * 100 / status.limit_micros if status.limit_micros else 0.0
        values = (
            ("gateway.budget.spent_usd", status.spent_micros / 1_000_000, "dollar"),
            ("gateway.budget.limit_usd", status.limit_micros / 1_000_000, "dollar"),
            ("gateway.budget.utilization", used, "percent"),
        )
        for name, value, unit in values:
            series.append(
                {
                    "metric": name,
                    "type": GAUGE,
                    "points": [{"timestamp": stamp, "value": value}],
                    "tags": tags,
                    "unit": unit,
                }
            )
    return series


# --- payloads --------------------------------------------------------------------------------

_OPEN, _CLOSE = b'{"series":[', b"]}"


def split_payloads(series: Iterable[Series], max_bytes: int = MAX_PAYLOAD_BYTES) -> list[bytes]:
    """JSON payloads of whole series, each at most `max_bytes` long."""
    return list(_payloads(series, max_bytes))


def _payloads(series: Iterable[Series], max_bytes: int) -> Iterator[bytes]:
    room = max_bytes - len(_OPEN) - len(_CLOSE)
    parts: list[bytes] = []
    size = 0
    for item in series:
        encoded = orjson.dumps(item)
        if len(encoded) > room:
            logger.error("a Datadog series is larger than a payload, skipped: %s", item["metric"])
            continue
        extra = len(encoded) + (1 if parts else 0)
        if size + extra > room:
            yield _OPEN + b",".join(parts) + _CLOSE
            parts, size = [], 0
            extra = len(encoded)
        parts.append(encoded)
        size += extra
    if parts:
        yield _OPEN + b",".join(parts) + _CLOSE
