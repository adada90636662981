"""/v1/organizations/…: the Anthropic-compatible Admin API (included at the site root)."""

from __future__ import annotations

from django.urls import path

from telemetry.adminapi import effective, spend_limits, usage

urlpatterns = [
    path("spend_limits", spend_limits.SpendLimitsView.as_view(), name="spend-limits"),
    # Before the detail route, which would take "effective" for an id.
    path(
        "spend_limits/effective", effective.EffectiveView.as_view(), name="spend-limits-effective"
    ),
    path(
        "spend_limits/<str:spend_limit_id>",
        spend_limits.SpendLimitView.as_view(),
        name="spend-limit",
    ),
    path("usage_report/messages", usage.UsageReportView.as_view(), name="usage-report-messages"),
    path("cost_report", usage.CostReportView.as_view(), name="cost-report"),
]
