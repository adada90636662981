"""OpenTelemetry export against a local OTLP/HTTP receiver that decodes the protobuf it gets."""

from __future__ import annotations

import datetime as dt
import gzip
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from django.utils import timezone
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from governance.policy import KeyPolicy, ProviderConfig, RouteTarget
from telemetry import observe
from telemetry.exporters import otel
from telemetry.models import UsageRecord
from tests.fakes.anthropic_upstream import Reply
from tests.proxy.conftest import fake_upstream, gateway, governed, wait_for

# The proxy tests' harness: pytest finds these fixtures by name in this module.
HARNESS = (fake_upstream, gateway, governed)


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


@dataclass
class ReceivedSpan:
    name: str
    kind: int
    start_ns: int
    end_ns: int
    status: int
    attributes: dict[str, Any]
    resource: dict[str, Any]
    trace_id: str = ""  # hex, as in a traceparent
    span_id: str = ""
    parent_span_id: str = ""  # "" for a root span


@dataclass
class Receiver:
    """A minimal OTLP/HTTP trace receiver on 127.0.0.1."""

    delay: float = 0.0
    spans: list[ReceivedSpan] = field(default_factory=list)
    posts: list[dict[str, str]] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    @property
    def endpoint(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                if self.headers.get("content-encoding") == "gzip":
                    body = gzip.decompress(body)
                headers = {k.lower(): v for k, v in self.headers.items()}
                receiver.posts.append({"path": self.path, **headers})
                if self.path != "/v1/traces":
                    self.send_response(404)
                    self.end_headers()
                    return
                time.sleep(receiver.delay)
                receiver.record(ExportTraceServiceRequest.FromString(body))
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def record(self, request: ExportTraceServiceRequest) -> None:
        for resource_spans in request.resource_spans:
            resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    self.spans.append(
                        ReceivedSpan(
                            name=span.name,
                            kind=span.kind,
                            start_ns=span.start_time_unix_nano,
                            end_ns=span.end_time_unix_nano,
                            status=span.status.code,
                            attributes={a.key: _value(a.value) for a in span.attributes},
                            resource=resource,
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_span_id=span.parent_span_id.hex(),
                        )
                    )

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


@pytest.fixture
def receiver(monkeypatch) -> Iterator[Receiver]:
    started = Receiver().start()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", started.endpoint)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "2")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    otel.reset()
    yield started
    otel.reset()
    started.stop()


@pytest.fixture(autouse=True)
def _no_leftover_tracer() -> Iterator[None]:
    otel.reset()
    yield
    otel.reset()


POLICY = KeyPolicy(
    key_id=3,
    key_name="alice",
    prefix="sk-gw-abc",
    organization_id=1,
    organization_name="acme",
    timezone="UTC",
    fail_open=False,
    parent_id=2,
    parent_name="vk-ml",
    team_id=5,
    team_name="ml",
)
TARGETS = (
    RouteTarget(
        provider=ProviderConfig(
            name="bedrock-us",
            kind="bedrock",
            base_url="https://bedrock-runtime.us-east-1.amazonaws.com",
            region="us-east-1",
            settings={},
        ),
        upstream_model="us.anthropic.claude-sonnet-4-6",
        position=0,
        weight=1,
    ),
)


def usage_event(**fields: Any) -> dict[str, Any]:
    return {
        "request_id": "gwreq_otel",
        "created_at": dt.datetime(2026, 11, 26, 12, 0, 0, 123456, tzinfo=dt.UTC),
        "organization_id": 1,
        "team_id": 5,
        "project_id": None,
        "key_id": 3,
        "key_name": "alice",
        "requested_model": "claude-sonnet-4-6",
        "routed_model": "claude-sonnet-4-6",
        "served_model": "us.anthropic.claude-sonnet-4-6",
        "provider": "bedrock-us",
        "status": 200,
        "error_type": "",
        "input_tokens": 10,
        "output_tokens": 40,
        "cache_read_tokens": 2000,
        "cache_write_5m_tokens": 300,
        "cache_write_1h_tokens": 100,
        "cost_micros": 1_500_000,
        "ttfb_ms": 250,
        "attempts": 1,
        "session_id": "session-1",
        **fields,
    }


def finish(event: dict[str, Any], duration: float = 0.75) -> None:
    now = time.perf_counter()
    observe.request_finished(
        event, POLICY, started=now - duration, forwarded_at=now - duration + 0.001, targets=TARGETS
    )


def test_a_request_becomes_one_genai_client_span(receiver):
    finish(usage_event())
    assert otel.force_flush()
    wait_for(lambda: len(receiver.spans) == 1)
    [span] = receiver.spans
    assert receiver.posts[0]["path"] == "/v1/traces"
    assert receiver.posts[0]["content-type"] == "application/x-protobuf"
    assert span.name == "chat claude-sonnet-4-6"
    assert span.kind == Span.SpanKind.SPAN_KIND_CLIENT
    attributes = span.attributes
    assert attributes["gen_ai.operation.name"] == "chat"
    assert attributes["gen_ai.provider.name"] == "aws.bedrock"
    assert attributes["gen_ai.request.model"] == "claude-sonnet-4-6"
    assert attributes["gen_ai.response.model"] == "us.anthropic.claude-sonnet-4-6"
    # OTel's input tokens include cache reads and writes; Anthropic's leave them out.
    assert attributes["gen_ai.usage.input_tokens"] == 10 + 2000 + 300 + 100
    assert attributes["gen_ai.usage.output_tokens"] == 40
    assert attributes["gen_ai.usage.cache_read.input_tokens"] == 2000
    assert attributes["gen_ai.usage.cache_creation.input_tokens"] == 400
    assert attributes["gateway.cost.usd"] == 1.5
    assert attributes["gateway.team.name"] == "ml"
    assert attributes["gateway.key.name"] == "vk-ml/alice"
    assert attributes["gateway.organization.name"] == "acme"
    assert attributes["gen_ai.conversation.id"] == "session-1"
    assert attributes["server.address"] == "bedrock-runtime.us-east-1.amazonaws.com"
    assert attributes["server.port"] == 443
    assert "error.type" not in attributes
    assert span.resource["service.name"] == "claude-gateway"
    # The request's own start (created_at, to the microsecond) and duration.
    noon = int(dt.datetime(2026, 11, 26, 12, tzinfo=dt.UTC).timestamp())
    assert span.start_ns == noon * 10**9 + 123_456_000
    assert span.end_ns - span.start_ns == pytest.approx(0.75e9, abs=5e6)


def test_a_failed_request_carries_error_type_and_error_status(receiver):
    finish(usage_event(status=529, error_type="overloaded_error", output_tokens=0))
    otel.force_flush()
    wait_for(lambda: len(receiver.spans) == 1)
    [span] = receiver.spans
    assert span.attributes["error.type"] == "overloaded_error"
    assert span.status == Status.StatusCode.STATUS_CODE_ERROR


def test_a_request_refused_before_the_upstream_gets_no_span(receiver):
    observe.request_finished(
        usage_event(status=402, error_type="billing_error"), POLICY, started=time.perf_counter()
    )
    finish(usage_event())
    otel.force_flush()
    wait_for(lambda: len(receiver.spans) == 1)
    time.sleep(0.2)
    assert len(receiver.spans) == 1


def test_export_is_off_without_an_endpoint(monkeypatch):
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
    assert not otel.active()
    finish(usage_event())  # no error, nothing to do


def test_a_slow_collector_never_slows_a_request(receiver):
    receiver.delay = 1.0
    started = time.perf_counter()
    for index in range(300):
        finish(usage_event(request_id=f"gwreq_{index}"))
    elapsed = time.perf_counter() - started
    assert elapsed < 0.5, elapsed  # spans are queued; the exporter's thread does the HTTP
    wait_for(lambda: len(receiver.spans) == 300, timeout=15)


@pytest.mark.django_db(transaction=True)
def test_a_proxied_request_is_exported_with_its_real_usage(
    receiver, gateway, governed, fake_upstream
):
    fake_upstream.default = Reply(cache_read=1000, cache_write_5m=200, cache_write_1h=50)
    before = timezone.now()
    response = httpx.post(
        gateway.anthropic_url + "/v1/messages",
        json={
            "model": "claude-sonnet-4-6",
            "max_tokens": 20,
            "messages": [{"role": "user", "content": "hi"}],
        },
        headers={"x-api-key": governed.secret},
        timeout=10,
    )
    assert response.status_code == 200
    wait_for(lambda: otel.force_flush() and len(receiver.spans) == 1)
    [span] = receiver.spans
    attributes = span.attributes
    assert span.name == "chat claude-sonnet-4-6"
    assert attributes["gen_ai.provider.name"] == "anthropic"
    assert attributes["gen_ai.usage.input_tokens"] == 25 + 1000 + 200 + 50
    assert attributes["gen_ai.usage.cache_creation.input_tokens"] == 250
    assert attributes["gateway.key.name"] == "vk-backend"
    assert attributes["gateway.team.name"] == "backend"
    assert attributes["gateway.request.id"] == response.headers["x-gateway-request-id"]
    assert attributes["server.address"] == "127.0.0.1"
    assert attributes["gateway.cost.usd"] > 0
    assert span.start_ns >= int(before.timestamp() * 1e9) - 1_000_000
    assert span.end_ns > span.start_ns


# --- joining the client's trace (W3C traceparent) ----------------------------------------------

CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"


def test_a_span_with_the_clients_traceparent_joins_its_trace(receiver):
    finish(usage_event(traceparent=f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"))
    otel.force_flush()
    wait_for(lambda: len(receiver.spans) == 1)
    [span] = receiver.spans
    assert (span.trace_id, span.parent_span_id) == (CLIENT_TRACE, CLIENT_SPAN)
    assert span.span_id not in ("", CLIENT_SPAN)


def test_a_span_without_traceparent_starts_its_own_trace(receiver):
    finish(usage_event())
    finish(usage_event(traceparent=""))
    otel.force_flush()
    wait_for(lambda: len(receiver.spans) == 2)
    first, second = receiver.spans
    assert first.parent_span_id == second.parent_span_id == ""
    assert len({first.trace_id, second.trace_id, CLIENT_TRACE}) == 3


def test_a_client_trace_marked_not_sampled_is_not_exported_by_the_default_sampler(receiver):
    # The SDK's default sampler, parentbased_always_on, follows the caller's decision.
    finish(
        usage_event(request_id="gwreq_unsampled", traceparent=f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-00")
    )
    finish(usage_event(request_id="gwreq_root"))
    otel.force_flush()
    wait_for(lambda: len(receiver.spans) == 1)
    assert otel.force_flush()
    assert [s.attributes["gateway.request.id"] for s in receiver.spans] == ["gwreq_root"]


def _post_through_gateway(gateway: Any, governed: Any, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(
        gateway.anthropic_url + "/v1/messages",
        json={
            "model": "claude-sonnet-4-6",
            "max_tokens": 20,
            "messages": [{"role": "user", "content": "hi"}],
        },
        headers={"x-api-key": governed.secret, **headers},
        timeout=10,
    )


@pytest.mark.django_db(transaction=True)
def test_a_proxied_request_with_traceparent_is_a_child_of_the_clients_span(
    receiver, gateway, governed, fake_upstream
):
    traceparent = f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"
    response = _post_through_gateway(gateway, governed, {"traceparent": traceparent})
    assert response.status_code == 200
    wait_for(lambda: otel.force_flush() and len(receiver.spans) == 1)
    [span] = receiver.spans
    assert (span.trace_id, span.parent_span_id) == (CLIENT_TRACE, CLIENT_SPAN)
    assert span.attributes["gateway.request.id"] == response.headers["x-gateway-request-id"]
    # The ledger row is written as always; the trace context is not one of its columns.
    request_id = response.headers["x-gateway-request-id"]
    wait_for(lambda: UsageRecord.objects.filter(request_id=request_id).exists())


@pytest.mark.django_db(transaction=True)
def test_a_proxied_request_with_an_invalid_traceparent_gets_a_fresh_root_span(
    receiver, gateway, governed, fake_upstream
):
    # Upper-case hex is not allowed; tests/proxy/test_auth.py has the other malformed kinds.
    traceparent = f"00-{CLIENT_TRACE.upper()}-{CLIENT_SPAN}-01"
    response = _post_through_gateway(gateway, governed, {"traceparent": traceparent})
    assert response.status_code == 200
    wait_for(lambda: otel.force_flush() and len(receiver.spans) == 1)
    [span] = receiver.spans
    assert span.parent_span_id == ""
    assert span.trace_id not in ("", CLIENT_TRACE, "0" * 32)
