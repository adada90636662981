"""Dashboards for users with a role: the request log and spend. Included at the site root."""

from __future__ import annotations

from django.urls import path
from django.views.generic import RedirectView

from telemetry.dashboards import logs, spend

app_name = "telemetry"

urlpatterns = [
    path("logs", logs.log_list, name="logs"),
    path("logs/live", logs.log_live, name="logs-live"),
    path("logs/<str:request_id>", logs.log_detail, name="log-detail"),
    path("dashboards/", RedirectView.as_view(pattern_name="telemetry:spend"), name="dashboards"),
    path("dashboards/spend", spend.spend_dashboard, name="spend"),
]
