"""The background jobs, and the in-process scheduler that runs them on the embedded default.

With CELERY_BROKER_URL set, Celery beat runs these jobs (gatewaysite/celery.py) and `start()`
does nothing. Without a broker, the ASGI lifespan calls `start()` and the same jobs run inside
the gateway process: one asyncio task that runs one job at a time in a worker thread
(sync_to_async, thread_sensitive=False, so the event loop never waits on the database) and
closes that thread's database connection afterwards. A failing job is logged and the others go
on. Every job is idempotent and safe to run in several processes at once, so several gateway
workers each running their own scheduler is harmless.

`python manage.py run_jobs [--once] [job ...]` runs the same jobs from cron or a shell.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connection

logger = logging.getLogger("gateway.jobs")


def _rollups() -> object:
    from telemetry.rollups import run_rollups

    return run_rollups()


def _alerts() -> object:
    from telemetry.alerts import run_alerts

    return run_alerts()


def _periods() -> object:
    from telemetry.periods import sync_budget_periods

    return sync_budget_periods()


def _reconcile() -> object:
    from telemetry.reconcile import reconcile_budgets

    return reconcile_budgets()


def _retention() -> object:
    from telemetry.retention import enforce_retention

    return enforce_retention()


def _datadog() -> object:
    from telemetry.exporters.datadog import push_datadog_metrics

    return push_datadog_metrics()


def _audit_anchor() -> object:
    from telemetry.audit_watch import export_anchor

    return export_anchor()


def _audit_verify() -> object:
    from telemetry.audit_watch import verify_and_alert

    return verify_and_alert()


def _policy_outbox() -> object:
    from governance.outbox import run_policy_outbox

    return run_policy_outbox()


@dataclass(frozen=True, slots=True)
class Job:
    name: str
    run: Callable[[], object]
    interval: float  # seconds between runs
    first_delay: float  # seconds after start; staggered so startup stays light


# Beat runs the same jobs at the same intervals (gatewaysite/celery.py; a test compares them).
JOBS: tuple[Job, ...] = (
    Job("rollups", _rollups, 60, 15),
    Job("alerts", _alerts, 60, 25),
    Job("periods", _periods, 300, 45),
    Job("reconcile", _reconcile, 3600, 300),
    Job("retention", _retention, 86400, 600),
    Job("datadog", _datadog, 60, 35),
    # The audit chain's head, exported outside the database; then the whole chain, verified.
    Job("audit_anchor", _audit_anchor, 300, 55),
    Job("audit_verify", _audit_verify, 3600, 120),
    # Publishes policy changes whose version bump failed (Redis down at commit).
    Job("policy_outbox", _policy_outbox, 5, 5),
)
JOBS_BY_NAME = {job.name: job for job in JOBS}


def plain(result: object) -> Any:
    """A job's result as JSON-friendly data (for Celery results and `run_jobs` output)."""
    if dataclasses.is_dataclass(result) and not isinstance(result, type):
        data = dataclasses.asdict(result)
        for name in ("drifts",):  # properties worth reporting
            if hasattr(result, name):
                data[name] = [dataclasses.asdict(item) for item in getattr(result, name)]
        return data
    return result


@dataclass(frozen=True, slots=True)
class Outcome:
    job: str
    ok: bool
    result: Any = None
    seconds: float = 0.0


def run_job(job: Job) -> Outcome:
    """Run one job in this thread; never raises; leaves no database connection open."""
    started = time.monotonic()
    try:
        result = plain(job.run())
    except Exception:
        logger.exception("background job %s failed", job.name)
        return Outcome(job.name, False, None, time.monotonic() - started)
    finally:
        if not connection.in_atomic_block:  # a caller's transaction owns its connection
            connection.close()
    return Outcome(job.name, True, result, time.monotonic() - started)


class Scheduler:
    """Runs jobs at their intervals, one at a time, until cancelled."""

    def __init__(self, jobs: Sequence[Job], *, clock: Callable[[], float] = time.monotonic):
        self.jobs = tuple(jobs)
        self.clock = clock
        self.outcomes: list[Outcome] = []  # the last few, for tests and diagnostics

    async def run(self) -> None:
        if not self.jobs:
            return
        now = self.clock()
        due = {job.name: now + job.first_delay for job in self.jobs}
        while True:
            job = min(self.jobs, key=lambda j: due[j.name])
            wait = due[job.name] - self.clock()
            if wait > 0:
                await asyncio.sleep(wait)
            outcome = await sync_to_async(run_job, thread_sensitive=False)(job)
            self.outcomes = [*self.outcomes[-49:], outcome]
            # After a slow run, skip the missed runs rather than firing them back to back.
            due[job.name] = max(due[job.name] + job.interval, self.clock())


_task: asyncio.Task[None] | None = None


def enabled() -> bool:
    return not settings.CELERY_BROKER_URL and settings.GATEWAY_IN_PROCESS_JOBS


def start() -> None:
    """Start the in-process scheduler on the running loop (ASGI lifespan startup).

    Does nothing when a Celery broker is configured, when GATEWAY_IN_PROCESS_JOBS is off, or
    when the scheduler already runs in this process.
    """
    global _task  # noqa: PLW0603 (one scheduler per process)
    if not enabled() or (_task is not None and not _task.done()):
        return
    _task = asyncio.get_running_loop().create_task(Scheduler(JOBS).run(), name="gateway-jobs")
    logger.info("background jobs run in process (no CELERY_BROKER_URL)")


async def stop() -> None:
    """Stop the scheduler started on this loop (ASGI lifespan shutdown); safe to call twice."""
    global _task  # noqa: PLW0603
    task = _task
    if task is None or task.get_loop() is not asyncio.get_running_loop():
        return
    _task = None
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
