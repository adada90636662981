from __future__ import annotations

from django.conf import settings
from django.contrib import admin
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView
from rest_framework.permissions import IsAdminUser

from gatewaysite import health, static_serving
from telemetry import metrics

admin.site.site_header = "Claude gateway"
admin.site.site_title = "Claude gateway admin"
admin.site.index_title = "Governance"
admin.site.site_url = "/dashboards/spend"  # "View site" leads to the spend dashboard

urlpatterns = [
    path("admin/", admin.site.urls),
    # The schema maps the admin API: staff only (SPECTACULAR_SETTINGS says so too).
    path(
        "api/schema/",
        SpectacularAPIView.as_view(permission_classes=[IsAdminUser]),
        name="schema",
    ),
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", metrics.metrics_view, name="metrics"),
    path("", include("telemetry.urls")),  # /logs and /dashboards/
]

if settings.GATEWAY_SERVE_STATIC:
    urlpatterns += [
        re_path(
            rf"^{settings.STATIC_URL.strip('/')}/(?P<path>.*)$",
            static_serving.serve,
        )
    ]
