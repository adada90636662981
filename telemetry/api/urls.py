"""Telemetry's routes under /api/v1/ (reports, self-service), included before governance's
router, and the self-service page."""

from __future__ import annotations

from django.urls import path

from telemetry.api import me, reports

urlpatterns = [
    path("reports/usage", reports.UsageReportView.as_view(), name="reports-usage"),
    path("reports/spend", reports.SpendReportView.as_view(), name="reports-spend"),
    path("me", me.MeView.as_view(), name="me"),
    path("me/statusline", me.StatuslineView.as_view(), name="me-statusline"),
]
