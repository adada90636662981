"""Celery tasks for the spend pipeline. Beat schedules them (gatewaysite/celery.py).

Tasks take ids and plain data and return plain data. Each one is idempotent and safe to run on
several workers at once (see the module each one calls); beat's `expires` drops a run that
waited longer than its interval, so a backlog never piles up behind a stopped worker.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

from celery import shared_task

from telemetry.scheduler import plain

F = TypeVar("F", bound=Callable[..., Any])


def _task(name: str) -> Callable[[F], F]:
    # Celery ships no type information: keep the decorated functions' own signatures.
    return cast(Callable[[F], F], shared_task(name=name))


@_task("telemetry.tasks.roll_up")
def roll_up() -> Any:
    """Roll new ledger rows up into hour, day and session rollups."""
    from telemetry.rollups import run_rollups

    return plain(run_rollups())


@_task("telemetry.tasks.sync_budget_periods")
def sync_budget_periods(budget_ids: list[int] | None = None) -> Any:
    """Update current period records and close the ones that are over."""
    from telemetry.periods import sync_budget_periods as sync

    return plain(sync(budget_ids=budget_ids))


@_task("telemetry.tasks.reconcile_budgets")
def reconcile_budgets(budget_ids: list[int] | None = None, repair: bool = True) -> Any:
    """Compare live budget counters with the ledger; correct and report drift."""
    from telemetry.reconcile import reconcile_budgets as reconcile

    return plain(reconcile(budget_ids=budget_ids, repair=repair))


@_task("telemetry.tasks.enforce_retention")
def enforce_retention(organization_ids: list[int] | None = None) -> Any:
    """Delete ledger rows past their organization's retention (rolled up ones only)."""
    from telemetry.retention import enforce_retention as enforce

    return plain(enforce(organization_ids=organization_ids))


@_task("telemetry.tasks.evaluate_alerts")
def evaluate_alerts() -> int:
    """Evaluate budget thresholds and forecasts and deliver due alerts."""
    from telemetry.alerts import run_alerts

    return run_alerts()


@_task("telemetry.tasks.push_datadog_metrics")
def push_datadog_metrics() -> Any:
    """Send new spend, token and budget figures to Datadog (does nothing without DD_API_KEY)."""
    from telemetry.exporters.datadog import push_datadog_metrics as push

    return plain(push())
