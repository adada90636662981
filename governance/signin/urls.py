"""The sign-in's routes, included at GATEWAY_SIGNIN_PATH (gatewaysite/urls.py). The proxy
serves the inference routes under the same path (/v1/messages, /v1/messages/count_tokens,
/v1/models: proxy/app.py); gatewaysite/asgi.py sends everything else here."""

from __future__ import annotations

from django.urls import path

from governance.signin import device, managed, protocol

app_name = "claude_code"

urlpatterns = [
    path(".well-known/oauth-authorization-server", protocol.discovery, name="discovery"),
    path("oauth/device_authorization", protocol.device_authorization, name="device_authorization"),
    path("oauth/token", protocol.token, name="token"),
    path("oauth/revoke", protocol.revoke, name="revoke"),
    path("oauth/callback", device.callback, name="callback"),
    path("device", device.device, name="device"),
    path("device/approve", device.approve, name="approve"),
    path("device/deny", device.deny, name="deny"),
    path("managed/settings", managed.settings_view, name="managed_settings"),
    path("v1/metrics", managed.ingest, {"signal": "metrics"}, name="metrics"),
    path("v1/logs", managed.ingest, {"signal": "logs"}, name="logs"),
    path("v1/traces", managed.ingest, {"signal": "traces"}, name="traces"),
]
