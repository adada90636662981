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


@_task("telemetry.tasks.export_audit_anchor")
def export_audit_anchor() -> Any:
    """Append the audit chain's head to the anchor file outside the database, and log it."""
    from telemetry.audit_watch import export_anchor

    return plain(export_anchor())


@_task("telemetry.tasks.verify_audit_chain")
def verify_audit_chain() -> Any:
    """Verify the audit chain; alert every enabled channel once per distinct break."""
    from telemetry.audit_watch import verify_and_alert

    return plain(verify_and_alert())


@_task("telemetry.tasks.push_datadog_metrics")
def push_datadog_metrics() -> Any:
    """Send new spend, token and budget figures to Datadog (does nothing without DD_API_KEY)."""
    from telemetry.exporters.datadog import push_datadog_metrics as push

    return plain(push())


@_task("telemetry.tasks.publish_policy_changes")
def publish_policy_changes() -> Any:
    """Publish policy changes whose version bump failed at commit; prune old published ones."""
    from governance.outbox import run_policy_outbox

    return plain(run_policy_outbox())
