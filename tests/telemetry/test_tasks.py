from __future__ import annotations

import json

import pytest

import telemetry.tasks  # noqa: F401 (registers the tasks)
from gatewaysite.celery import app
from telemetry import scheduler
from telemetry.models import BudgetPeriodRecord, SpendRollup
from tests import factories
from tests.telemetry.usage_events import at, event, write

pytestmark = pytest.mark.django_db

TASKS = {
    "rollups": "telemetry.tasks.roll_up",
    "alerts": "telemetry.tasks.evaluate_alerts",
    "periods": "telemetry.tasks.sync_budget_periods",
    "reconcile": "telemetry.tasks.reconcile_budgets",
    "retention": "telemetry.tasks.enforce_retention",
    "datadog": "telemetry.tasks.push_datadog_metrics",
    "audit_anchor": "telemetry.tasks.export_audit_anchor",
    "audit_verify": "telemetry.tasks.verify_audit_chain",
    "policy_outbox": "telemetry.tasks.publish_policy_changes",
}


def test_beat_runs_the_same_jobs_at_the_same_intervals_as_the_in_process_scheduler():
    beat = app.conf.beat_schedule
    assert set(beat) == set(scheduler.JOBS_BY_NAME) == set(TASKS)
    for name, job in scheduler.JOBS_BY_NAME.items():
        assert beat[name]["task"] == TASKS[name]
        assert beat[name]["schedule"] == job.interval
        assert beat[name]["options"]["expires"] == job.interval


def test_every_scheduled_task_is_registered():
    for name in TASKS.values():
        assert name in app.tasks


def test_roll_up_task_is_idempotent_and_returns_plain_data(settings):
    settings.GATEWAY_ROLLUP_SETTLE_SECONDS = 0
    key = factories.virtual_key()
    write(event(at("2026-11-02 09:00"), key=key), event(at("2026-11-02 10:00"), key=key))
    first = app.tasks[TASKS["rollups"]].delay().get()
    assert first["rows"] == 2
    json.dumps(first)
    cells = list(SpendRollup.objects.values())
    assert app.tasks[TASKS["rollups"]].delay().get()["rows"] == 0
    assert list(SpendRollup.objects.values()) == cells


def test_period_task_takes_budget_ids():
    key = factories.virtual_key()
    budget = factories.budget(owner=key, amount_micros=5, period="month")
    factories.budget(owner=key.organization, amount_micros=5, period="month")
    result = app.tasks[TASKS["periods"]].delay([budget.pk]).get()
    assert result["budgets"] == 1
    json.dumps(result)
    assert list(BudgetPeriodRecord.objects.values_list("budget_id", flat=True)) == [budget.pk]


def test_reconcile_task_reports_ledger_figures_without_redis(settings):
    settings.REDIS_URL = ""
    budget = factories.budget(owner=factories.organization(), amount_micros=5, period="month")
    result = app.tasks[TASKS["reconcile"]].delay([budget.pk]).get()
    json.dumps(result)
    assert result["shared_store"] is False
    assert [check["budget_id"] for check in result["checks"]] == [budget.pk]
    assert result["drifts"] == []


def test_retention_task_takes_organization_ids():
    org = factories.organization(log_retention_days=1)
    result = app.tasks[TASKS["retention"]].delay([org.pk]).get()
    json.dumps(result)
    assert result["deleted"] == 0


def test_evaluate_alerts_runs_the_alert_module(monkeypatch):
    import telemetry.alerts

    calls = []

    def fake_run_alerts() -> int:
        calls.append(1)
        return 3

    monkeypatch.setattr(telemetry.alerts, "run_alerts", fake_run_alerts)
    assert app.tasks[TASKS["alerts"]].delay().get() == 3
    assert calls == [1]
