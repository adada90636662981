"""What a signed-in Claude Code fetches and sends besides inference: its team's managed settings
(envelope, ETag / 304) and its OpenTelemetry exports (accepted, relayed with the developer's
identity when a collector is configured)."""

from __future__ import annotations

import gzip
import hashlib
import json
from collections.abc import Iterator

import httpx
import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import ResourceMetrics
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from governance.models import OrganizationSignIn, TeamSignIn
from governance.services import common
from governance.signin import otlp
from tests.fakes.webhook_receiver import WebhookReceiver
from tests.governance.signin.conftest import SignIn
from tests.signin_support import ACTOR

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def documents(signin: SignIn) -> None:
    common.save_instance(
        OrganizationSignIn(
            organization=signin.organization,
            managed_settings={
                "env": {"BASE_LAYER": "1", "SHARED": "org"},
                "permissions": {"deny": ["Bash(rm -rf:*)"], "allow": ["Read"]},
                "cleanupPeriodDays": 30,
            },
        ),
        actor=ACTOR,
    )
    common.save_instance(
        TeamSignIn(
            team=signin.backend.team,
            managed_settings={
                "availableModels": ["claude-sonnet-4-6", "claude-haiku-4-5"],
                "env": {"SHARED": "team", "ANTHROPIC_DEFAULT_OPUS_MODEL": "claude-opus-4-7"},
                "permissions": {"deny": ["WebFetch"], "allow": ["Edit"]},
            },
        ),
        actor=ACTOR,
    )


def test_managed_settings_merge_the_team_over_the_organization(signin: SignIn, documents):
    token = signin.signed_in()["access_token"]

    response = signin.get("/managed/settings", token)

    assert response.status_code == 200
    body = response.json()
    settings = body["settings"]
    assert settings["availableModels"] == ["claude-sonnet-4-6", "claude-haiku-4-5"]
    assert settings["env"] == {
        "BASE_LAYER": "1",
        "SHARED": "team",
        "ANTHROPIC_DEFAULT_OPUS_MODEL": "claude-opus-4-7",
    }
    assert settings["permissions"] == {"deny": ["Bash(rm -rf:*)", "WebFetch"], "allow": ["Edit"]}
    assert settings["cleanupPeriodDays"] == 30
    canonical = json.dumps(settings, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    checksum = "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()
    assert body["uuid"] == body["checksum"] == checksum
    assert response.headers["etag"] == f'"{checksum}"'


def test_managed_settings_answer_304_to_their_own_etag(signin: SignIn, documents):
    token = signin.signed_in()["access_token"]
    etag = signin.get("/managed/settings", token).headers["etag"]

    same = signin.get("/managed/settings", token, **{"If-None-Match": etag})
    other = signin.get("/managed/settings", token, **{"If-None-Match": '"sha256:0000"'})

    assert same.status_code == 304 and same.content == b""
    assert same.headers["etag"] == etag
    assert other.status_code == 200


def test_an_edit_in_the_admin_changes_the_etag(signin: SignIn, documents):
    token = signin.signed_in()["access_token"]
    etag = signin.get("/managed/settings", token).headers["etag"]
    layer = TeamSignIn.objects.get()
    layer.managed_settings = {**layer.managed_settings, "model": "claude-sonnet-4-6"}
    common.save_instance(layer, actor=ACTOR)

    changed = signin.get("/managed/settings", token, **{"If-None-Match": etag})

    assert changed.status_code == 200
    assert changed.json()["settings"]["model"] == "claude-sonnet-4-6"


def test_no_document_at_all_is_no_policy(signin: SignIn):
    token = signin.signed_in()["access_token"]

    response = signin.get("/managed/settings", token)

    assert (response.status_code, response.text) == (404, "no policy matched")
    assert response.headers["cache-control"] == "no-store"


def test_managed_settings_need_a_valid_bearer(signin: SignIn, documents):
    for token in ("", "not-a-token", "eyJhbGciOiJIUzI1NiJ9.e30.x"):
        response = signin.get("/managed/settings", token)
        assert response.status_code == 401
        assert response.headers["x-should-retry"] == "false"
        assert response.json()["error"]["type"] == "authentication_error"


# --- telemetry ------------------------------------------------------------------------------


@pytest.fixture
def collector(monkeypatch: pytest.MonkeyPatch) -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver().start()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.base_url + "/otlp")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-collector-key=abc%20123")
    yield receiver
    receiver.stop()


def metrics_export(claimed_user: str) -> bytes:
    request = ExportMetricsServiceRequest(
        resource_metrics=[
            ResourceMetrics(
                resource=Resource(
                    attributes=[
                        KeyValue(key="service.name", value=AnyValue(string_value="claude-code")),
                        KeyValue(key="user.id", value=AnyValue(string_value=claimed_user)),
                    ]
                )
            )
        ]
    )
    return bytes(request.SerializeToString())


def attributes_of(body: bytes) -> dict[str, str]:
    request = ExportMetricsServiceRequest()
    request.ParseFromString(body)
    [resource] = request.resource_metrics
    return {kv.key: kv.value.string_value for kv in resource.resource.attributes}


def post(signin: SignIn, path: str, token: str, body: bytes, **headers: str) -> httpx.Response:
    return httpx.post(
        signin.base + path,
        content=body,
        headers={"Authorization": f"Bearer {token}", **headers},
        timeout=10,
    )


def test_telemetry_is_relayed_with_the_developers_identity(signin: SignIn, collector):
    token = signin.signed_in()["access_token"]

    answer = post(
        signin,
        "/v1/metrics",
        token,
        metrics_export("someone-else"),
        **{"Content-Type": "application/x-protobuf"},
    )

    assert (answer.status_code, answer.content) == (200, b"")
    assert otlp.relay().wait_idle()
    [received] = collector.requests
    assert received.path == "/otlp/v1/metrics"
    assert received.headers["x-collector-key"] == "abc 123"
    assert received.headers["content-type"] == "application/x-protobuf"
    assert attributes_of(received.body) == {
        "service.name": "claude-code",
        "user.id": "u-alice",  # the IdP subject, not what the client claimed
        "user.email": "alice@acme.dev",
        "gateway.organization": "acme",
        "gateway.team": "backend",
        "gateway.key": "vk-backend/alice@acme.dev",
    }


def test_gzipped_json_logs_are_relayed_too(signin: SignIn, collector):
    token = signin.signed_in()["access_token"]
    export = {"resourceLogs": [{"resource": {"attributes": []}, "scopeLogs": []}]}

    answer = post(
        signin,
        "/v1/logs",
        token,
        gzip.compress(json.dumps(export).encode()),
        **{"Content-Type": "application/json", "Content-Encoding": "gzip"},
    )

    assert answer.status_code == 200
    assert otlp.relay().wait_idle()
    [received] = collector.requests
    assert received.path == "/otlp/v1/logs"
    [entry] = received.json()["resourceLogs"]
    attributes = {a["key"]: a["value"]["stringValue"] for a in entry["resource"]["attributes"]}
    assert attributes["user.id"] == "u-alice"


def test_a_relaying_gateway_points_claude_codes_exporters_at_itself(signin: SignIn, collector):
    token = signin.signed_in()["access_token"]

    settings = signin.get("/managed/settings", token).json()["settings"]

    assert settings["env"]["OTEL_EXPORTER_OTLP_ENDPOINT"] == signin.base
    assert settings["env"]["CLAUDE_CODE_ENABLE_TELEMETRY"] == "1"
    assert settings["env"]["OTEL_EXPORTER_OTLP_PROTOCOL"] == "http/protobuf"


def test_without_a_collector_telemetry_is_accepted_and_dropped(signin: SignIn, monkeypatch):
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    token = signin.signed_in()["access_token"]

    answers = [post(signin, f"/v1/{s}", token, b"\x00\x01") for s in ("metrics", "logs", "traces")]

    assert [a.status_code for a in answers] == [200, 200, 200]


def test_telemetry_needs_a_valid_bearer(signin: SignIn):
    answer = post(signin, "/v1/metrics", "forged", b"")

    assert answer.status_code == 401


def test_the_relay_queue_is_bounded_and_drops_rather_than_waits(monkeypatch):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    relay = otlp.Relay(max_bytes=10)
    export = otlp.Export("metrics", b"x" * 11, otlp.PROTOBUF, "", {"user.id": "u"})

    assert relay.submit(export) is False
    assert relay.dropped == 1


def test_an_unreadable_export_is_dropped_and_the_relay_carries_on(collector):
    relay = otlp.Relay()
    identity = {"user.id": "u-1"}

    relay.submit(otlp.Export("metrics", b"\xff\xff not protobuf", otlp.PROTOBUF, "", identity))
    relay.submit(otlp.Export("metrics", metrics_export("x"), otlp.PROTOBUF, "", identity))

    assert relay.wait_idle()
    assert relay.dropped == 1
    [received] = collector.requests
    assert attributes_of(received.body)["user.id"] == "u-1"
