"""Deployment health: a circuit breaker per deployment (provider + upstream model).

A deployment that keeps failing cools down (requests skip it) and is probed back; the state is
shared by every worker and replica through Redis when REDIS_URL is set, else kept in process.
proxy/health/base.py states the policy; proxy/health/gate.py is what the failover loop calls.

Two stores share one interface, like the admission counters: RedisHealthStore and
MemoryHealthStore. Neither imports Django or telemetry, so the admin and /metrics can read
them (telemetry/provider_health.py) without an import cycle.
"""

from __future__ import annotations

from proxy.health.base import (
    FAILURE_STATUSES,
    Attempt,
    CooldownPolicy,
    DeploymentStatus,
    HealthStore,
    HealthStoreUnavailable,
    State,
    Transition,
    deployment_id,
    retry_after_seconds,
)

__all__ = [
    "FAILURE_STATUSES",
    "Attempt",
    "CooldownPolicy",
    "DeploymentStatus",
    "HealthStore",
    "HealthStoreUnavailable",
    "State",
    "Transition",
    "deployment_id",
    "retry_after_seconds",
]
