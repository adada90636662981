"""/metrics: what a scrape shows (this process's series, or every worker's in multiprocess
mode, and the scrape-time readers) and who may read it. The series themselves, and what a
request adds to them, are telemetry/metrics.py."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.utils.crypto import constant_time_compare
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, multiprocess
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from telemetry.metrics import REGISTRY

logger = logging.getLogger("gateway.metrics")


# --- usage backlog (scrape time) -------------------------------------------------------------


class UsageBacklogCollector(Collector):
    """Usage events waiting on this host's disk (GATEWAY_SPOOL_DIR, telemetry/spool.py): in the
    spool for the ledger database, and dead-lettered (refused by the ledger, see the admin).
    Counted incrementally, so a scrape reads only what was appended since the last one."""

    def describe(self) -> Iterable[GaugeMetricFamily]:
        return self._families()

    def collect(self) -> Iterable[GaugeMetricFamily]:
        from pathlib import Path

        from telemetry import spool

        spooled, dead = families = self._families()
        try:
            backlog = spool.backlog(Path(settings.GATEWAY_SPOOL_DIR))
        except OSError:
            logger.warning("usage backlog gauges unavailable", exc_info=True)
            return []
        spooled.add_metric([], backlog.spooled)
        dead.add_metric([], backlog.dead)
        return families

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, GaugeMetricFamily]:
        return (
            GaugeMetricFamily(
                "gateway_usage_spooled_events", "Usage events in the spool, waiting for the ledger."
            ),
            GaugeMetricFamily(
                "gateway_usage_dead_letter_events",
                "Usage events the ledger refused, kept as dead letters.",
            ),
        )


# --- exposition ------------------------------------------------------------------------------


def multiprocess_dir() -> str:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")


def scrape_registry() -> CollectorRegistry:
    """What /metrics shows: every worker's samples in multiprocess mode, else this process's."""
    registry = CollectorRegistry()
    if multiprocess_dir():
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        registry.register(REGISTRY)
    registry.register(UsageBacklogCollector())
    # Imported here: the proxy imports this module, and needs none of the scrape-time readers.
    from telemetry.audit_watch import AuditChainCollector
    from telemetry.budget_gauges import BudgetCollector
    from telemetry.provider_health import DeploymentHealthCollector

    registry.register(BudgetCollector())
    registry.register(AuditChainCollector())
    registry.register(DeploymentHealthCollector())
    return registry


def metrics_view(request: HttpRequest) -> HttpResponse:
    """GET /metrics (Prometheus text format): the names and spend of every team and key, so
    not for everyone. It takes `Authorization: Bearer <GATEWAY_METRICS_TOKEN>` or the login of
    a user who reads every organization's usage (a role held everywhere, or superuser);
    without a token configured it is open only with DEBUG on."""
    refusal = _metrics_refusal(request)
    if refusal is not None:
        return refusal
    return HttpResponse(generate_latest(scrape_registry()), content_type=CONTENT_TYPE_LATEST)


def _metrics_refusal(request: HttpRequest) -> HttpResponse | None:
    token = settings.GATEWAY_METRICS_TOKEN
    if token and constant_time_compare(request.headers.get("authorization", ""), f"Bearer {token}"):
        return None
    user = getattr(request, "user", None)
    if user is not None and user.is_active and user.is_staff:
        # Staff is any role now (a membership makes it); the figures are every organization's.
        from telemetry.access import reads_all_usage

        if reads_all_usage(user):
            return None
    if token:
        refusal = _plain("metrics need a bearer token\n", 401)
        refusal["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return refusal
    if settings.DEBUG:
        return None
    return _plain(
        "metrics are closed: set GATEWAY_METRICS_TOKEN and scrape with "
        "`Authorization: Bearer <token>`, or sign in to the admin as staff\n",
        403,
    )


def _plain(text: str, status: int) -> HttpResponse:
    return HttpResponse(text, status=status, content_type="text/plain")
