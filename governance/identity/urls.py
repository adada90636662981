"""Single sign-on routes, included at /sso/ (gatewaysite/urls.py). The callback URL to register
at the identity provider is `<gateway URL>/sso/callback/`."""

from __future__ import annotations

from django.urls import path

from governance.identity import views

app_name = "sso"

urlpatterns = [
    path("start/", views.SSOStartView.as_view(), name="start"),
    path("callback/", views.SSOCallbackView.as_view(), name="callback"),
]
