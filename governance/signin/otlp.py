"""Relaying a signed-in Claude Code's OpenTelemetry exports to the organization's collector.

On when OTEL_EXPORTER_OTLP_ENDPOINT is set (the collector of the gateway's own traces,
telemetry/exporters/otel.py), or a signal's own OTEL_EXPORTER_OTLP_{METRICS,LOGS,TRACES}_ENDPOINT;
OTEL_EXPORTER_OTLP_HEADERS are sent along (an API key of the collector, say). Off, exports are
accepted and dropped, as the peers' gateways do.

Relaying never holds a request: an export goes into a bounded queue (by count and bytes) and one
worker thread per process decodes it (OTLP/HTTP protobuf or JSON, gzip or not), stamps the
developer's identity on every resource (`user.id` = the IdP subject, `user.email`, the
gateway organization, team and key; replacing what the client claimed), and posts it. A full
queue drops the export (counted and logged), an unreadable one is dropped too.
"""

from __future__ import annotations

import gzip
import io
import json
import logging
import os
import queue
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import httpx
from google.protobuf.message import DecodeError, Message  # type: ignore[import-untyped]
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.util.re import parse_env_headers

logger = logging.getLogger(__name__)

SIGNALS = ("metrics", "logs", "traces")
PROTOBUF = "application/x-protobuf"
MAX_QUEUED = 1000
MAX_QUEUED_BYTES = 64 * 1024 * 1024
MAX_DECOMPRESSED_BYTES = 32 * 1024 * 1024
TIMEOUT_SECONDS = 10.0
# Per signal: the request message and the name of its resource list (protobuf, JSON).
_SHAPES: dict[str, tuple[type[Message], str, str]] = {
    "metrics": (ExportMetricsServiceRequest, "resource_metrics", "resourceMetrics"),
    "logs": (ExportLogsServiceRequest, "resource_logs", "resourceLogs"),
    "traces": (ExportTraceServiceRequest, "resource_spans", "resourceSpans"),
}


class Unreadable(ValueError):
    """The body is not an OTLP export of the declared content type."""


@dataclass(frozen=True, slots=True)
class Export:
    signal: str
    body: bytes = field(repr=False)
    content_type: str
    content_encoding: str
    attributes: Mapping[str, str]


def endpoint(signal: str) -> str:
    """Where `signal` goes, per the OTLP exporter variables; "" when relaying is off."""
    own = os.environ.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_ENDPOINT", "").strip()
    if own:
        return own
    base = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
    return f"{base.rstrip('/')}/v1/{signal}" if base else ""


def enabled() -> bool:
    return any(endpoint(signal) for signal in SIGNALS)


def with_identity(export: Export) -> tuple[bytes, str]:
    """The export's body, uncompressed, with the identity on every resource; raises Unreadable."""
    body = export.body
    if export.content_encoding.strip().lower() == "gzip":
        body = _gunzip(body)
    message_type, proto_field, json_field = _SHAPES[export.signal]
    media_type = export.content_type.split(";")[0].strip().lower()
    if media_type == "application/json":
        return _json_with_identity(body, json_field, export.attributes), "application/json"
    message = message_type()
    try:
        message.ParseFromString(body)
    except DecodeError:
        raise Unreadable("not an OTLP protobuf export") from None
    for resource_entry in getattr(message, proto_field):
        attributes = resource_entry.resource.attributes
        kept = [kv for kv in attributes if kv.key not in export.attributes]
        del attributes[:]
        attributes.extend(kept)
        for key, value in export.attributes.items():
            attributes.append(KeyValue(key=key, value=AnyValue(string_value=value)))
    return message.SerializeToString(), PROTOBUF


def _gunzip(body: bytes) -> bytes:
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(body)) as stream:
            data = stream.read(MAX_DECOMPRESSED_BYTES + 1)
    except (OSError, EOFError):
        raise Unreadable("not gzip") from None
    if len(data) > MAX_DECOMPRESSED_BYTES:
        raise Unreadable("too large once decompressed")
    return data


def _json_with_identity(body: bytes, name: str, identity: Mapping[str, str]) -> bytes:
    try:
        document = json.loads(body)
    except ValueError:
        raise Unreadable("not JSON") from None
    entries = document.get(name) if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise Unreadable(f"no {name} list")
    for entry in entries:
        if not isinstance(entry, dict):
            raise Unreadable(f"{name} holds a non-object")
        resource = entry.setdefault("resource", {})
        if not isinstance(resource, dict):
            raise Unreadable("a resource is not an object")
        attributes = [
            kv
            for kv in resource.get("attributes") or []
            if not (isinstance(kv, dict) and kv.get("key") in identity)
        ]
        attributes += [{"key": k, "value": {"stringValue": v}} for k, v in identity.items()]
        resource["attributes"] = attributes
    return json.dumps(document, separators=(",", ":")).encode()


class Relay:
    """The queue and its worker thread (one per process, started on first use)."""

    def __init__(self, *, max_queued: int = MAX_QUEUED, max_bytes: int = MAX_QUEUED_BYTES) -> None:
        self._queue: queue.Queue[Export] = queue.Queue(maxsize=max_queued)
        self._max_bytes = max_bytes
        self._bytes = 0
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.dropped = 0
        self.sent = 0
        self.failed = 0
        self._last_warning = 0.0

    def submit(self, export: Export) -> bool:
        """Queue `export` for the collector; False (dropped) when the queue is full."""
        size = len(export.body)
        with self._lock:
            if self._bytes + size > self._max_bytes:
                self._drop("the relay queue is full")
                return False
            self._bytes += size
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="otlp-relay", daemon=True)
                self._thread.start()
        try:
            self._queue.put_nowait(export)
        except queue.Full:
            with self._lock:
                self._bytes -= size
                self._drop("the relay queue is full")
            return False
        return True

    def _drop(self, why: str) -> None:
        self.dropped += 1
        now = time.monotonic()
        if now - self._last_warning > 60:  # a warning a minute at most, not one per export
            self._last_warning = now
            logger.warning("OTLP relay dropped an export: %s (%d so far)", why, self.dropped)

    def _run(self) -> None:
        with httpx.Client(timeout=TIMEOUT_SECONDS, follow_redirects=False) as client:
            while True:
                export = self._queue.get()
                try:
                    self._send(client, export)
                except Exception:  # the worker outlives any one export
                    logger.exception("OTLP relay failed on a %s export", export.signal)
                finally:
                    with self._lock:
                        self._bytes -= len(export.body)
                    self._queue.task_done()

    def _send(self, client: httpx.Client, export: Export) -> None:
        url = endpoint(export.signal)
        if not url:
            return
        try:
            body, content_type = with_identity(export)
        except Unreadable as error:
            with self._lock:
                self._drop(f"unreadable {export.signal} export ({error})")
            return
        headers = dict(_headers())
        headers["Content-Type"] = content_type
        try:
            response = client.post(url, content=body, headers=headers)
        except httpx.HTTPError as error:
            self.failed += 1
            logger.warning("OTLP relay to the collector failed: %s", type(error).__name__)
            return
        if response.status_code >= 300:
            self.failed += 1
            logger.warning("the OTLP collector answered HTTP %d", response.status_code)
            return
        self.sent += 1

    def wait_idle(self, timeout: float = 5.0) -> bool:
        """Whether every queued export was handled within `timeout` (tests, shutdown)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._queue.unfinished_tasks == 0:
                return True
            time.sleep(0.01)
        return False


def _headers() -> Mapping[str, str]:
    return parse_env_headers(os.environ.get("OTEL_EXPORTER_OTLP_HEADERS", ""), liberal=True)


_relay = Relay()


def relay() -> Relay:
    return _relay


def identity_attributes(
    *, subject: str, email: str, organization: str, team: str, key: str
) -> dict[str, str]:
    attributes = {
        "user.id": subject,
        "user.email": email,
        "gateway.organization": organization,
        "gateway.team": team,
        "gateway.key": key,
    }
    return {name: value for name, value in attributes.items() if value}
