"""The one call the proxy makes when a request (or an MCP tool call) finishes: Prometheus and
OpenTelemetry.

Cheap and safe on the hot path: no network, no database, never raises. Prometheus samples are
in-memory (or memory-mapped files in multiprocess mode); the span goes to a batch processor
whose own thread exports it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

from governance.policy import KeyPolicy, RouteTarget
from telemetry import metrics
from telemetry.exporters import otel

logger = logging.getLogger("gateway.telemetry")
ERROR_LOG_INTERVAL = 60.0

_last_error_logged = -ERROR_LOG_INTERVAL


def request_finished(
    event: Mapping[str, Any],
    policy: KeyPolicy,
    *,
    started: float,
    ended: float | None = None,
    forwarded_at: float | None = None,
    targets: Sequence[RouteTarget] = (),
) -> None:
    """Record a finished request: the usage event as written to the ledger, its key's policy.

    `started` is the handler's time.perf_counter() at arrival, `ended` the same clock when the
    answer's last byte was sent (None: now); `forwarded_at` the same clock when admission was
    done and the first upstream attempt began (None for a request refused before that: it gets
    metrics but no span). `targets` are the route's deployments, which tell the provider's kind
    and address.
    """
    try:
        total = (ended or time.perf_counter()) - started
        overhead = None if forwarded_at is None else forwarded_at - started
        _observe(event, policy, total, overhead, targets)
    except Exception:
        _log_failure()


def _observe(
    event: Mapping[str, Any],
    policy: KeyPolicy,
    total: float,
    overhead: float | None,
    targets: Sequence[RouteTarget],
) -> None:
    names = _names(policy)
    metrics.record_request(event, names, total=total, overhead=overhead)
    if overhead is None or not otel.active():
        return
    provider_name = event.get("provider") or ""
    target = next((t for t in targets if t.provider.name == provider_name), None)
    otel.record_span(
        event,
        duration=total,
        organization=names.organization,
        team=names.team,
        key=names.key,
        provider_kind=target.provider.kind if target is not None else "",
        base_url=target.provider.base_url if target is not None else "",
    )


def tool_call_finished(event: Mapping[str, Any], policy: KeyPolicy, *, started: float) -> None:
    """Record a finished MCP tool call (its usage event, route "mcp.tool"): Prometheus, and an
    OTel span for a call that named a known server. `started` is time.perf_counter() at the
    call's arrival."""
    try:
        total = time.perf_counter() - started
        names = _names(policy)
        metrics.record_tool_call(event, names, total=total)
        if event.get("tool_server"):
            otel.record_tool_span(
                event,
                duration=total,
                organization=names.organization,
                team=names.team,
                key=names.key,
            )
    except Exception:
        _log_failure()


# Policy snapshots are shared by a key's requests until the next reload: their display names
# are made once per snapshot (the cached policy is held, so its id is not reused meanwhile).
_names_by_policy: dict[int, tuple[KeyPolicy, metrics.Names]] = {}
MAX_NAMED_POLICIES = 10_000


def _names(policy: KeyPolicy) -> metrics.Names:
    cached = _names_by_policy.get(id(policy))
    if cached is not None and cached[0] is policy:
        return cached[1]
    key = f"{policy.parent_name}/{policy.key_name}" if policy.parent_name else policy.key_name
    names = metrics.Names(organization=policy.organization_name, team=policy.team_name, key=key)
    if len(_names_by_policy) >= MAX_NAMED_POLICIES:
        _names_by_policy.clear()
    _names_by_policy[id(policy)] = (policy, names)
    return names


def upstream_attempt(provider: str, model: str, *, status: int, ok: bool) -> None:
    """One upstream attempt's outcome (proxy/health/gate.py): the provider's name, the
    upstream model."""
    try:
        metrics.record_attempt(provider, model, status=status, ok=ok)
    except Exception:
        _log_failure()


def deployment_failover(deployment: str) -> None:
    """A request moved on from `deployment` after a failed attempt there."""
    _deployment_event("failover", deployment)


def deployment_skipped(deployment: str) -> None:
    """A request skipped `deployment`: it was cooling down."""
    _deployment_event("skipped", deployment)


def deployment_cooldown(deployment: str, seconds: float) -> None:
    """`deployment`'s breaker opened for `seconds` (the state itself is read at scrape time)."""
    _deployment_event("cooldown", deployment)


def _deployment_event(event: str, deployment: str) -> None:
    try:
        provider, _, model = deployment.partition(":")
        metrics.record_deployment_event(event, provider, model)
    except Exception:
        _log_failure()


def _log_failure() -> None:
    """Log with the traceback, at most once a minute: a bug here must not flood the logs."""
    global _last_error_logged  # noqa: PLW0603 (one timestamp; a class would add nothing)
    now = time.monotonic()
    if now - _last_error_logged >= ERROR_LOG_INTERVAL:
        _last_error_logged = now
        logger.exception("could not record request telemetry")
