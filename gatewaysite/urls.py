from __future__ import annotations

from django.conf import settings
from django.contrib import admin
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from gatewaysite import health, static_serving
from governance.api.permissions import CanReadSchema
from governance.identity import views as identity_views
from telemetry import exposition
from telemetry.dashboards import selfservice

admin.site.site_header = "Claude gateway"
admin.site.site_title = "Claude gateway admin"
admin.site.index_title = "Governance"
admin.site.site_url = "/dashboards/spend"  # "View site" leads to the spend dashboard
# Unknown URLs under /api/ answer JSON (governance/api/errors.py), others Django's page.
handler404 = "governance.api.errors.not_found"

urlpatterns = [
    # The admin's login page with "Sign in with SSO" when single sign-on is on.
    path("admin/login/", identity_views.admin_login),
    path("admin/", admin.site.urls),
    path("sso/", include("governance.identity.urls")),  # single sign-on (OpenID Connect)
    # Claude Code's /login through the gateway (README "Claude Code sign-in"); the inference
    # routes under the same path are the proxy's.
    path(settings.GATEWAY_SIGNIN_PATH.strip("/") + "/", include("governance.signin.urls")),
    # The REST API (README "REST API"); its schema and docs: staff sessions and API tokens
    # of users with a role (SPECTACULAR_SETTINGS says so too).
    # Reports and self-service (/api/v1/reports/…, /api/v1/me) before the resources' router.
    path("api/v1/", include("telemetry.api.urls")),
    path("api/v1/", include("governance.api.urls")),
    # Anthropic's Admin API shapes (spend limits, usage and cost reports): README.
    path("v1/organizations/", include("telemetry.adminapi.urls")),
    # A developer's own budgets: the key is pasted into a form, never put in a URL.
    path("me", selfservice.me_page, name="self-service"),
    path(
        "api/schema/",
        SpectacularAPIView.as_view(permission_classes=[CanReadSchema]),
        name="schema",
    ),
    path(
        "api/docs/",
        SpectacularSwaggerView.as_view(url_name="schema", permission_classes=[CanReadSchema]),
        name="api-docs",
    ),
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", exposition.metrics_view, name="metrics"),
    path("", include("telemetry.urls")),  # /logs and /dashboards/
]

if settings.GATEWAY_SERVE_STATIC:
    urlpatterns += [
        re_path(
            rf"^{settings.STATIC_URL.strip('/')}/(?P<path>.*)$",
            static_serving.serve,
        )
    ]
