"""The routes a signed-in Claude Code calls with its access token, besides inference:

- `GET <base>/managed/settings`: the team's managed settings in the envelope Claude Code reads,
  `{uuid, checksum, settings}`, with the checksum as a quoted ETag; `If-None-Match` with it
  answers 304 (Claude Code polls hourly). `404 no policy matched` when neither the
  organization nor the team has a document (Claude Code tells that from an empty policy).
- `POST <base>/v1/metrics|logs|traces`: OTLP/HTTP exports, 200 with an empty body whether
  relayed (governance/signin/otlp.py) or dropped; a 404 here would make the exporter log an
  error at every flush.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from governance import managed_settings
from governance.signin import bearer, documents, otlp
from governance.signin.routing import base_url

# What a relaying gateway adds to the served env (unless a layer sets it): Claude Code then
# exports its metrics, logs and traces to the gateway, which relays them with the developer's
# identity (the six variables Anthropic's gateway pushes, CLAUDE-GATEWAY.md §1.12).
TELEMETRY_ENV = {
    "CLAUDE_CODE_ENABLE_TELEMETRY": "1",
    "OTEL_METRICS_EXPORTER": "otlp",
    "OTEL_LOGS_EXPORTER": "otlp",
    "OTEL_TRACES_EXPORTER": "otlp",
    "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
}


def served_document(request: HttpRequest, developer: bearer.Developer) -> dict[str, Any] | None:
    document = documents.team_document(
        organization_id=developer.policy.organization_id, team_id=developer.policy.team_id
    )
    if not otlp.enabled():
        return document
    env = {
        **TELEMETRY_ENV,
        "OTEL_EXPORTER_OTLP_ENDPOINT": base_url(request),
        **((document or {}).get("env") or {}),
    }
    return {**(document or {}), "env": env}


def _matches(if_none_match: str, etag: str) -> bool:
    tags = [tag.strip().removeprefix("W/") for tag in if_none_match.split(",")]
    return etag in tags


@require_GET
def settings_view(request: HttpRequest) -> HttpResponse:
    developer = bearer.authenticate(request, fresh=True)
    if developer is None:
        return bearer.refused()
    document = served_document(request, developer)
    if document is None:
        response = HttpResponse("no policy matched", status=404, content_type="text/plain")
        response["Cache-Control"] = "no-store"
        return response
    envelope = managed_settings.envelope(document)
    etag = f'"{envelope["checksum"]}"'
    if _matches(request.headers.get("If-None-Match", ""), etag):
        response = HttpResponse(status=304)
    else:
        response = JsonResponse(envelope, json_dumps_params={"ensure_ascii": False})
    response["ETag"] = etag
    response["Vary"] = "Authorization"
    return response


@csrf_exempt
@require_POST
def ingest(request: HttpRequest, signal: str) -> HttpResponse:
    developer = bearer.authenticate(request)
    if developer is None:
        return bearer.refused()
    if otlp.enabled():
        try:
            body = request.body
        except RequestDataTooBig:
            return HttpResponse(status=413)
        policy = developer.policy
        otlp.relay().submit(
            otlp.Export(
                signal=signal,
                body=body,
                content_type=request.headers.get("Content-Type", otlp.PROTOBUF),
                content_encoding=request.headers.get("Content-Encoding", ""),
                attributes=otlp.identity_attributes(
                    subject=developer.claims.subject,
                    email=developer.claims.email,
                    organization=policy.organization_name,
                    team=policy.team_name,
                    key=f"{policy.parent_name}/{policy.key_name}"
                    if policy.parent_name
                    else policy.key_name,
                ),
            )
        )
    return HttpResponse(status=200)
