"""The scheduled audit-trail jobs: export the chain's head outside the database, and verify the
chain, alerting every enabled alert channel once per distinct break.

A break stays a break until someone repairs it, so the hourly check logs an ERROR every time
but delivers the alert once per break and channel: the break and the channels that took it are
remembered in the cache (shared by every process when it is Redis). A channel that failed is
tried again at the next check, and a new break alerts again. The last result is also kept in
the cache for the `gateway_audit_chain_intact` gauge of /metrics.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.core.cache import cache
from django.utils import timezone
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

logger = logging.getLogger("gateway.audit")

STATE_KEY = "audit:verify:state"  # the last verification, for the gauge
ALERTED_KEY = "audit:verify:alerted"  # the break last alerted, and the channels that took it


@dataclass(frozen=True, slots=True)
class AuditCheck:
    ok: bool
    checked: int
    first_bad_id: int | None
    problem: str
    alerted: int  # channels the alert reached in this run


def export_anchor() -> object:
    from governance.services import audit_anchors

    return audit_anchors.export_anchor()


def verify_and_alert(now: dt.datetime | None = None) -> AuditCheck:
    """Verify the chain; on a break log an ERROR and alert the channels not yet told of it."""
    from governance.services import audit

    now = now or timezone.now()
    report = audit.verify_chain()
    _remember(
        STATE_KEY, {"ok": report.ok, "at": now.timestamp(), "first_bad_id": report.first_bad_id}
    )
    if report.ok:
        _remember(ALERTED_KEY, None)
        logger.info(
            "audit chain intact: %d events, %d anchors", report.checked, report.anchors_checked
        )
        return AuditCheck(True, report.checked, None, "", 0)
    where = f" at event {report.first_bad_id}" if report.first_bad_id else ""
    logger.error("audit chain broken%s: %s", where, report.problem)
    payload = _payload(report.first_bad_id, report.problem, report.checked, now)
    sent = _alert_once(_fingerprint(report.first_bad_id, report.problem), payload)
    return AuditCheck(False, report.checked, report.first_bad_id, report.problem, sent)


def _fingerprint(first_bad_id: int | None, problem: str) -> str:
    return hashlib.sha256(f"{first_bad_id}|{problem}".encode()).hexdigest()[:16]


def _payload(
    first_bad_id: int | None, problem: str, checked: int, now: dt.datetime
) -> dict[str, Any]:
    where = f" at event {first_bad_id}" if first_bad_id else ""
    return {
        "kind": "audit_chain_broken",
        "title": "Audit trail broken",
        "message": (
            f"The audit trail's hash chain is broken{where}: {problem} ({checked} events "
            "verified before it). Run `manage.py verify_audit` and compare with the anchors."
        ),
        "first_bad_event_id": first_bad_id,
        "problem": problem,
        "events_verified": checked,
        "detected_at": now.isoformat(),
    }


def _alert_once(fingerprint: str, payload: dict[str, Any]) -> int:
    from telemetry import channels
    from telemetry.models import AlertChannel

    state = _recall(ALERTED_KEY) or {}
    delivered: set[int] = (
        set(state.get("delivered", [])) if state.get("break") == fingerprint else set()
    )
    sent = 0
    for channel in AlertChannel.objects.filter(enabled=True).order_by("pk"):
        if channel.pk in delivered:
            continue
        result = channels.deliver(channel, payload)
        if result.ok:
            delivered.add(channel.pk)
            sent += 1
        else:
            logger.warning("audit alert to channel %s failed: %s", channel.pk, result.detail)
    _remember(ALERTED_KEY, {"break": fingerprint, "delivered": sorted(delivered)})
    return sent


def _remember(key: str, value: dict[str, Any] | None) -> None:
    # Best effort: with the cache down a break is still logged and alerted (perhaps again).
    try:
        cache.set(key, value, None)
    except Exception:
        logger.warning("audit check state not saved (cache unavailable)", exc_info=True)


def _recall(key: str) -> dict[str, Any] | None:
    try:
        value: dict[str, Any] | None = cache.get(key)
    except Exception:
        logger.warning("audit check state not read (cache unavailable)", exc_info=True)
        return None
    return value


def last_state() -> dict[str, Any] | None:
    """The last verification's result ({"ok", "at", "first_bad_id"}), if any."""
    return _recall(STATE_KEY)


class AuditChainCollector(Collector):
    """gateway_audit_chain_intact (1 intact, 0 broken) and the time of the last verification,
    from the cache; no samples before the first scheduled verification."""

    def describe(self) -> Iterable[GaugeMetricFamily]:
        return self._families()

    def collect(self) -> Iterable[GaugeMetricFamily]:
        intact, verified_at = families = self._families()
        state = last_state()  # None too when the cache is down: /metrics still answers
        if state is None:
            return []
        intact.add_metric([], 1.0 if state.get("ok") else 0.0)
        verified_at.add_metric([], float(state.get("at", 0)))
        return families

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, GaugeMetricFamily]:
        return (
            GaugeMetricFamily(
                "gateway_audit_chain_intact",
                "1 when the last audit chain verification found it intact, 0 when broken.",
            ),
            GaugeMetricFamily(
                "gateway_audit_chain_verified_timestamp_seconds",
                "When the audit chain was last verified (Unix time).",
            ),
        )
