"""A fast fake AWS Bedrock runtime for benchmarks: InvokeModel and InvokeModelWithResponseStream.

Built like fake_upstream.py (a bare asyncio protocol, every response precomputed):
`POST /model/{id}/invoke` answers the Anthropic message JSON, as Bedrock does;
`POST /model/{id}/invoke-with-response-stream` answers `application/vnd.amazon.eventstream` in
chunked encoding, one binary frame per Anthropic event (prelude with lengths and CRC, string
headers `:event-type: chunk`, `:content-type`, `:message-type: event`, the payload
`{"bytes": <base64 of the event JSON>}`, message CRC), `amazon-bedrock-invocationMetrics` on
message_stop, no ping. The model id in the path is not looked at.

SigV4 signatures are NOT verified here (tests/fakes/bedrock_upstream.py does that): the gateway
still signs every request, and that cost is what the benchmark measures; checking it here would
only slow the fake down.

Run: python benchmarks/fake_bedrock.py --port 8997 [--model claude-sonnet-4-6]
"""

from __future__ import annotations

import asyncio
import base64
import json
import struct
import zlib
from collections.abc import Mapping

from fake_upstream import (
    LAST_CHUNK,
    NOT_FOUND,
    USAGE,
    arguments,
    chunk,
    json_body,
    serve,
    stream_events,
)

MODEL = "claude-sonnet-4-6"
INVOKE, STREAM = b"/invoke", b"/invoke-with-response-stream"
HEADERS = (
    b"x-amzn-RequestId: 6b3c7d1e-bench-fake-0000-bedrock00000\r\n"
    b"x-amzn-bedrock-invocation-latency: 1\r\n"
    b"x-amzn-bedrock-input-token-count: 12\r\n"
    b"x-amzn-bedrock-output-token-count: 48\r\n"
)
_STRING = 7  # event-stream header value type


def frame(headers: Mapping[str, str], payload: bytes) -> bytes:
    """One event-stream message: prelude (lengths + CRC), string headers, payload, CRC."""
    encoded = b"".join(
        bytes([len(name)]) + name.encode() + bytes([_STRING]) + struct.pack(">H", len(value))
        + value.encode()
        for name, value in headers.items()
    )  # fmt: skip
    prelude = struct.pack(">II", 12 + len(encoded) + len(payload) + 4, len(encoded))
    message = prelude + struct.pack(">I", zlib.crc32(prelude)) + encoded + payload
    return message + struct.pack(">I", zlib.crc32(message))


def chunk_frame(event: Mapping[str, object]) -> bytes:
    data = json.dumps(event, separators=(",", ":")).encode()
    payload = json.dumps({"bytes": base64.b64encode(data).decode()}, separators=(",", ":"))
    headers = {
        ":event-type": "chunk",
        ":content-type": "application/json",
        ":message-type": "event",
    }
    return frame(headers, payload.encode())


def bedrock_events(model: str) -> list[dict[str, object]]:
    events = stream_events(model, ping=False)
    events[-1] = {
        **events[-1],
        "amazon-bedrock-invocationMetrics": {
            "inputTokenCount": USAGE["input_tokens"],
            "outputTokenCount": USAGE["output_tokens"],
            "invocationLatency": 1,
            "firstByteLatency": 1,
            "cacheReadInputTokenCount": USAGE["cache_read_input_tokens"],
            "cacheWriteInputTokenCount": USAGE["cache_creation_input_tokens"],
        },
    }
    return events


def _path(head: bytes) -> bytes:
    line = head.split(b"\r\n", 1)[0]
    parts = line.split(b" ")
    return parts[1].split(b"?", 1)[0] if len(parts) == 3 else b""


class BedrockAnswers:
    """Every response byte string, built once."""

    def __init__(self, model: str) -> None:
        body = json_body(model)
        self.json = (
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n%scontent-length: %d\r\n\r\n%s"
            % (HEADERS, len(body), body)
        )
        frames = [chunk_frame(event) for event in bedrock_events(model)]
        head = (
            b"HTTP/1.1 200 OK\r\ncontent-type: application/vnd.amazon.eventstream\r\n"
            b"x-amzn-bedrock-content-type: application/json\r\n%s"
            b"transfer-encoding: chunked\r\n\r\n" % HEADERS
        )
        self.stream_first = head + chunk(frames[0])
        self.stream_rest = b"".join(chunk(f) for f in frames[1:]) + LAST_CHUNK

    def answer(self, head: bytes, body: bytes) -> tuple[bytes, bytes]:
        path = _path(head)
        if not (head.startswith(b"POST ") and path.startswith(b"/model/")):
            return NOT_FOUND, b""
        if path.endswith(STREAM):
            return self.stream_first, self.stream_rest
        if path.endswith(INVOKE):
            return self.json, b""
        return NOT_FOUND, b""


def main() -> None:
    args = arguments(__doc__, MODEL)
    asyncio.run(serve(args.host, args.port, BedrockAnswers(args.model), "fake Bedrock runtime"))


if __name__ == "__main__":
    main()
