"""Provider health in the admin and on /metrics: the failover breaker's state per deployment
(proxy/health/), read where the gateways write it.

With REDIS_URL set the gateways keep it in Redis and this reads it there (one pipelined read,
synchronous: the admin and /metrics are plain Django views). On the embedded default the admin
and /metrics run in the gateway process itself, whose runtime keeps the state in a
MemoryHealthStore: every live store of this process (one per gateway event loop,
proxy.health.memory.live_stores) is read and merged, the most recently active first.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from django.conf import settings
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from governance.models import Deployment, Provider
from proxy.health.base import DeploymentStatus, HealthStoreUnavailable, State, deployment_id
from proxy.health.memory import live_stores
from proxy.health.redis import read_statuses, redis_prefix
from telemetry import access

logger = logging.getLogger("gateway.metrics")

RECENT_SECONDS = 300  # "recent": errors and p50 latency over the last five minutes
MAX_SERIES = 200  # deployments exported on /metrics, the most recently active first
TEMPLATE = "admin/telemetry/provider_health.html"
WILDCARD_MODELS = ("", "*")


def current_statuses() -> list[DeploymentStatus]:
    """Every deployment with breaker state, by id. Raises HealthStoreUnavailable (Redis)."""
    if settings.REDIS_URL:
        prefix = redis_prefix(settings.GATEWAY_COUNTER_PREFIX)
        return read_statuses(settings.REDIS_URL, prefix)
    merged: dict[str, DeploymentStatus] = {}
    for store in live_stores():
        for status in store.snapshot():
            kept = merged.get(status.deployment)
            if kept is None or status.last_activity > kept.last_activity:
                merged[status.deployment] = status
    return sorted(merged.values(), key=lambda s: s.deployment)


# --- the admin page ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HealthRow:
    deployment: str
    provider: str
    model: str
    kind: str
    routes: str
    status: DeploymentStatus | None
    now: float

    @property
    def state(self) -> str:
        return "ok" if self.status is None else self.status.state.name.lower()

    @property
    def state_text(self) -> str:
        status = self.status
        if status is None:
            return "ok (no attempt recorded)"
        if status.state == State.COOLING and status.open_until is not None:
            left = int(status.open_until - self.now) + 1
            return f"cooling down until {_clock(status.open_until)} ({left} s)"
        if status.state == State.PROBING:
            since = f" since {_clock(status.probe_since)}" if status.probe_since else ""
            return f"probing{since}"
        if status.state == State.PROBE_DUE:
            return "cooldown over, waiting for a probe"
        return "ok"

    @property
    def recent_errors(self) -> int:
        return 0 if self.status is None else self.status.recent_errors(self.now - RECENT_SECONDS)

    @property
    def p50_ms(self) -> int | None:
        return (
            None if self.status is None else self.status.p50_latency_ms(self.now - RECENT_SECONDS)
        )

    @property
    def last_error(self) -> str:
        status = self.status
        if status is None or status.last_error_at is None:
            return "-"
        what = f"HTTP {status.last_error_status}" if status.last_error_status else "no answer"
        return f"{what} at {_moment(status.last_error_at)}"

    @property
    def last_ok(self) -> str:
        status = self.status
        return "-" if status is None or status.last_ok_at is None else _moment(status.last_ok_at)


def _local(epoch: float) -> dt.datetime:
    return timezone.localtime(dt.datetime.fromtimestamp(epoch, dt.UTC))


def _clock(epoch: float) -> str:
    return _local(epoch).strftime("%H:%M:%S")


def _moment(epoch: float) -> str:
    return _local(epoch).strftime("%Y-%m-%d %H:%M:%S")


def health_rows(statuses: Sequence[DeploymentStatus], now: float) -> list[HealthRow]:
    """The configured deployments and every deployment with state (a `*` deployment's state is
    kept per model it served), by provider and model."""
    configured = Deployment.objects.filter(enabled=True).select_related("provider", "route")
    kinds = dict(Provider.objects.values_list("name", "kind"))
    routes: dict[str, set[str]] = {}
    for row in configured:
        model = row.upstream_model if row.upstream_model not in WILDCARD_MODELS else "*"
        routes.setdefault(deployment_id(row.provider.name, model), set()).add(row.route.public_name)
    by_id = {status.deployment: status for status in statuses}
    served = {status.provider for status in statuses}
    rows = []
    for deployment in sorted(set(routes) | set(by_id)):
        provider, _, model = deployment.partition(":")
        if model == "*" and provider in served:
            continue  # its models have rows of their own
        rows.append(
            HealthRow(
                deployment=deployment,
                provider=provider,
                model=model,
                kind=kinds.get(provider, "?"),
                routes=", ".join(sorted(routes.get(deployment, ()))),
                status=by_id.get(deployment),
                now=now,
            )
        )
    return rows


def provider_health_view(request: HttpRequest) -> HttpResponse:
    """GET: each deployment's breaker (ok / cooling down / probing), recent errors, last error,
    last success and p50 latency; `?provider=<name>` keeps one provider's."""
    if not access.sees_provider_health(request.user):
        raise PermissionDenied
    now = time.time()
    unavailable = False
    try:
        statuses = current_statuses()
    except HealthStoreUnavailable:
        statuses, unavailable = [], True
    rows = health_rows(statuses, now)
    provider = request.GET.get("provider", "")
    if provider:
        rows = [row for row in rows if row.provider == provider]
    context = {
        **admin.site.each_context(request),
        "title": "Provider health",
        "rows": rows,
        "provider": provider,
        "unavailable": unavailable,
        "shared": bool(settings.REDIS_URL),
        "recent_minutes": RECENT_SECONDS // 60,
        "cooldown": {
            "failures": settings.GATEWAY_COOLDOWN_FAILURES,
            "seconds": settings.GATEWAY_COOLDOWN_SECONDS,
            "max_seconds": settings.GATEWAY_COOLDOWN_MAX_SECONDS,
        },
    }
    return TemplateResponse(request, TEMPLATE, context)


class ProviderHealthColumn:
    """A "health" column on the provider list: its deployments' breakers, linking to the page.
    Added by TelemetryConfig.ready (governance's admin imports nothing from telemetry)."""

    name = "health"
    after = "enabled"
    _attr = "_telemetry_provider_health"

    def prepare(self, rows: Sequence[Provider]) -> None:
        try:
            statuses = current_statuses()
        except HealthStoreUnavailable:
            statuses = []
        open_by_provider: dict[str, list[DeploymentStatus]] = {}
        for status in statuses:
            if status.state != State.OK:
                open_by_provider.setdefault(status.provider, []).append(status)
        for row in rows:
            setattr(row, self._attr, open_by_provider.get(row.name, []))

    @admin.display(description="health")
    def cell(self, obj: Provider) -> str:
        opened: list[DeploymentStatus] | None = getattr(obj, self._attr, None)
        if opened is None:
            return "-"
        url = reverse("admin:telemetry_provider_health") + f"?provider={obj.name}"
        if not opened:
            return format_html('<a href="{}">ok</a>', url)
        cooling = sum(1 for s in opened if s.state == State.COOLING)
        text = f"{cooling} cooling down" if cooling else ""
        if len(opened) > cooling:
            text = ", ".join(filter(None, [text, f"{len(opened) - cooling} probing"]))
        return format_html('<a href="{}" style="color:#dc2626">{}</a>', url, text)


# --- /metrics (scrape time) ----------------------------------------------------------------


class DeploymentHealthCollector(Collector):
    """Breaker gauges per deployment, read from the health state when scraped."""

    def describe(self) -> Iterable[GaugeMetricFamily]:
        return self._families()  # no samples: registering must not read Redis

    def collect(self) -> Iterable[GaugeMetricFamily]:
        cooling, failures = families = self._families()
        try:
            statuses = current_statuses()
        except HealthStoreUnavailable:
            logger.warning("deployment health gauges unavailable", exc_info=True)
            return []
        recent = sorted(statuses, key=lambda s: s.last_activity, reverse=True)[:MAX_SERIES]
        for status in recent:
            labels = [status.provider, status.model]
            cooling.add_metric(labels, 0 if status.state == State.OK else 1)
            failures.add_metric(labels, status.failures)
        return families

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, GaugeMetricFamily]:
        labels = ["provider", "model"]
        return (
            GaugeMetricFamily(
                "gateway_deployment_cooling_down",
                "1 while the deployment's breaker is open (cooling down, or waiting for or "
                "running its probe).",
                labels=labels,
            ),
            GaugeMetricFamily(
                "gateway_deployment_consecutive_failures",
                "Failed attempts in a row on the deployment.",
                labels=labels,
            ),
        )
