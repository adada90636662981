"""Bedrock's errors and its binary event stream, in Anthropic's terms (PROTOCOLS.md 4.2, 4.3).

Pure translation, no I/O: a Bedrock exception (HTTP or in-stream) becomes the status and error
type Anthropic would answer; event-stream messages, decoded by botocore's parser, become
Anthropic SSE frames (an `event: <type>` line, a `data: <json>` line, a blank line).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from botocore.eventstream import EventStreamBuffer, ParserError

from proxy.errors import anthropic_error_body, anthropic_type_for

EVENT_TYPE_PATTERN = re.compile(r"[a-z_]{1,64}")
INVOCATION_METRICS = "amazon-bedrock-invocationMetrics"
MAX_MESSAGE_LENGTH = 2000

# Bedrock exception names (lower case: streams name them in camelCase) -> the status and error
# type Anthropic would answer. Throttling and quotas are rate limits; "not ready" and
# "unavailable" are capacity (529, which clients and failover retry); a model timeout is 504.
ERRORS: dict[str, tuple[int, str]] = {
    "validationexception": (400, "invalid_request_error"),
    "accessdeniedexception": (403, "permission_error"),
    "unrecognizedclientexception": (401, "authentication_error"),
    "invalidsignatureexception": (401, "authentication_error"),
    "incompletesignatureexception": (401, "authentication_error"),
    "missingauthenticationtokenexception": (401, "authentication_error"),
    "expiredtokenexception": (401, "authentication_error"),
    "resourcenotfoundexception": (404, "not_found_error"),
    "modeltimeoutexception": (504, "timeout_error"),
    "throttlingexception": (429, "rate_limit_error"),
    "servicequotaexceededexception": (429, "rate_limit_error"),
    "modelnotreadyexception": (529, "overloaded_error"),
    "modelerrorexception": (500, "api_error"),
    "modelstreamerrorexception": (500, "api_error"),
    "internalserverexception": (500, "api_error"),
    "serviceunavailableexception": (529, "overloaded_error"),
}
# Bedrock's HTTP statuses that Anthropic does not use, when no exception name says more.
STATUS_FALLBACK = {408: 504, 424: 500, 503: 529}


@dataclass(frozen=True, slots=True)
class BedrockFailure:
    """A Bedrock error, as Anthropic would have reported it."""

    status: int
    error_type: str
    message: str

    @classmethod
    def of(cls, exception: str, message: str, http_status: int = 0) -> BedrockFailure:
        # x-amzn-ErrorType reads "ThrottlingException:http://internal.amazon.com/coral/...".
        name = exception.split(":", 1)[0].strip()
        mapped = ERRORS.get(name.lower())
        if mapped is None:
            status = STATUS_FALLBACK.get(http_status, http_status or 500)
            mapped = (status, anthropic_type_for(status))
        status, error_type = mapped
        if status in (401, 403):
            # AWS signature errors quote the canonical request, session token included.
            message = f"Bedrock refused the gateway's AWS credentials ({name or status})."
        return cls(status, error_type, message[:MAX_MESSAGE_LENGTH] or f"Bedrock: {name}")

    def body(self, request_id: str) -> bytes:
        return anthropic_error_body(self.error_type, self.message, request_id)

    def sse(self) -> bytes:
        error = {"type": "error", "error": {"type": self.error_type, "message": self.message}}
        return b"event: error\ndata: " + orjson.dumps(error) + b"\n\n"


def message_of(payload: bytes) -> str:
    try:
        parsed = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return ""
    if not isinstance(parsed, dict):
        return ""
    return str(parsed.get("message") or parsed.get("Message") or "")


class EventTranslator:
    """Bedrock event-stream bytes in, Anthropic SSE frames (or the failure that ends them) out.

    Frames can be split anywhere across reads: botocore's buffer keeps the partial one.
    """

    def __init__(self) -> None:
        self._buffer = EventStreamBuffer()
        self._unparsed = 0  # bytes fed that are not part of a whole message yet
        self.stopped = False

    def feed(self, data: bytes) -> list[bytes | BedrockFailure]:
        if self.stopped:
            return []
        self._buffer.add_data(data)
        self._unparsed += len(data)
        items: list[bytes | BedrockFailure] = []
        try:
            for message in self._buffer:
                self._unparsed -= message.prelude.total_length
                item = _translate(message.headers, message.payload)
                if item is not None:
                    items.append(item)
                if isinstance(item, BedrockFailure):
                    break
        except ParserError:  # a bad CRC or length: nothing after it can be trusted
            items.append(BedrockFailure(502, "api_error", "Bedrock sent an unreadable event."))
        self.stopped = any(isinstance(item, BedrockFailure) for item in items)
        return items

    def finish(self) -> list[bytes | BedrockFailure]:
        """What the end of the upstream body means: a cut inside a message is an error."""
        if self.stopped or not self._unparsed:
            return []
        self.stopped = True
        return [BedrockFailure(502, "api_error", "The Bedrock stream ended inside an event.")]


def _translate(headers: Mapping[str, Any], payload: bytes) -> bytes | BedrockFailure | None:
    kind = headers.get(":message-type")
    if kind == "event":
        return _chunk_frame(payload) if headers.get(":event-type") == "chunk" else None
    if kind == "exception":
        return BedrockFailure.of(str(headers.get(":exception-type") or ""), message_of(payload))
    if kind == "error":
        code, message = headers.get(":error-code"), headers.get(":error-message")
        return BedrockFailure.of(str(code or ""), str(message or ""))
    return None


def _chunk_frame(payload: bytes) -> bytes | BedrockFailure:
    """One Anthropic SSE frame from a chunk's `{"bytes": <base64 of the event JSON>}`."""
    try:
        data = base64.b64decode(orjson.loads(payload)["bytes"], validate=True)
        event = orjson.loads(data)
    except (orjson.JSONDecodeError, binascii.Error, KeyError, TypeError):
        return BedrockFailure(502, "api_error", "Bedrock sent an unreadable event.")
    kind = event.get("type") if isinstance(event, dict) else None
    if not isinstance(kind, str) or not EVENT_TYPE_PATTERN.fullmatch(kind):
        return BedrockFailure(502, "api_error", "Bedrock sent an event of no known type.")
    if INVOCATION_METRICS in event:  # on message_stop: Bedrock's, not part of Anthropic's event
        del event[INVOCATION_METRICS]
        data = orjson.dumps(event)
    elif b"\n" in data or b"\r" in data:  # an SSE data line cannot hold a line break
        data = orjson.dumps(event)
    return b"event: " + kind.encode() + b"\ndata: " + data + b"\n\n"


def joined(items: list[bytes | BedrockFailure]) -> bytes:
    return b"".join(item if isinstance(item, bytes) else item.sse() for item in items)
