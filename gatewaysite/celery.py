"""The Celery app. Without CELERY_BROKER_URL tasks run eagerly in process (embedded default) and
the periodic jobs run in the gateway process instead of beat (telemetry/scheduler.py)."""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gatewaysite.settings")

app = Celery("gatewaysite")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


def _every(seconds: float, task: str) -> dict[str, object]:
    # A run that waited longer than its interval is dropped: the next one does its work.
    return {"task": task, "schedule": seconds, "options": {"expires": seconds}}


# The same jobs and intervals as the in-process scheduler (telemetry.scheduler.JOBS).
app.conf.beat_schedule = {
    "rollups": _every(60.0, "telemetry.tasks.roll_up"),
    "alerts": _every(60.0, "telemetry.tasks.evaluate_alerts"),
    "periods": _every(300.0, "telemetry.tasks.sync_budget_periods"),
    "reconcile": _every(3600.0, "telemetry.tasks.reconcile_budgets"),
    "retention": _every(86400.0, "telemetry.tasks.enforce_retention"),
    "datadog": _every(60.0, "telemetry.tasks.push_datadog_metrics"),
    "audit_anchor": _every(300.0, "telemetry.tasks.export_audit_anchor"),
    "audit_verify": _every(3600.0, "telemetry.tasks.verify_audit_chain"),
    "policy_outbox": _every(5.0, "telemetry.tasks.publish_policy_changes"),
}
