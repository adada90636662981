"""A fast fake Anthropic upstream for benchmarks: canned JSON and SSE answers in microseconds.

A bare asyncio protocol (no web framework) speaking just enough HTTP/1.1 with keep-alive: it
reads a request by Content-Length and answers `POST /v1/messages` with a canned message, as
JSON or, when the body asks for `"stream": true`, as an SSE stream in chunked encoding (the
way Anthropic sends it). The upstream must cost next to nothing, so that "through the gateway
minus direct" measures the gateway and not the fake.

The protocol and server here are shared with the other fakes (fake_openai.py, fake_bedrock.py):
each supplies a `Responder` that maps a request to precomputed response bytes.

Run: python benchmarks/fake_upstream.py --port 8999 [--model claude-opus-5-5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
from typing import Protocol

MODEL = "claude-opus-5-5"
# A Claude Code turn on a warm prompt cache: most of the prompt is read from the cache. Its
# 1,790 tokens keep a 60 s cell at 5,000 req/s under the key's 2e9 tokens per minute (seed.py).
USAGE = {
    "input_tokens": 12,
    "cache_creation_input_tokens": 310,
    "cache_read_input_tokens": 1_420,
    "cache_creation": {"ephemeral_5m_input_tokens": 310, "ephemeral_1h_input_tokens": 0},
    "output_tokens": 48,
    "service_tier": "standard",
}
TEXT = "Hello! I'm ready to help with your code. What would you like to work on today?"


def json_body(model: str) -> bytes:
    message = {
        "id": "msg_01BenchFakeUpstream000000",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": TEXT}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": USAGE,
    }
    return json.dumps(message, separators=(",", ":")).encode()


def _event(kind: str, data: dict[str, object]) -> bytes:
    return f"event: {kind}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def sse_events(model: str) -> list[bytes]:
    """The events of one streamed message, as Anthropic sends them (PROTOCOLS.md 1.4)."""
    return [_event(str(event["type"]), event) for event in stream_events(model)]


def stream_events(model: str, *, ping: bool = True) -> list[dict[str, object]]:
    """The event objects of one streamed message, in order."""
    start_usage = {**USAGE, "output_tokens": 1}
    message: dict[str, object] = {
        "id": "msg_01BenchFakeUpstream000000",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": start_usage,
    }
    words = TEXT.split(" ")
    deltas = [" ".join(words[i : i + 4]) + " " for i in range(0, len(words), 4)]
    events: list[dict[str, object]] = [
        {"type": "message_start", "message": message},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    ]
    if ping:
        events.append({"type": "ping"})
    events += [
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": d}}
        for d in deltas
    ]
    events += [
        {"type": "content_block_stop", "index": 0},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": {"output_tokens": USAGE["output_tokens"]},
        },
        {"type": "message_stop"},
    ]
    return events


def chunk(data: bytes) -> bytes:
    """One chunk of an HTTP/1.1 chunked body."""
    return b"%x\r\n%s\r\n" % (len(data), data)


LAST_CHUNK = b"0\r\n\r\n"
NOT_FOUND = b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n"


class Responder(Protocol):
    def answer(self, head: bytes, body: bytes) -> tuple[bytes, bytes]:
        """The bytes to write at once and those to write one loop turn later (b"": none)."""
        ...


def streams(body: bytes) -> bool:
    return b'"stream":true' in body or b'"stream": true' in body


class Answers:
    """Every Anthropic response byte string, built once."""

    def __init__(self, model: str) -> None:
        body = json_body(model)
        self.json = (
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
            b"request-id: req_bench_fake\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)
        )
        events = sse_events(model)
        head = (
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n"
            b"cache-control: no-cache\r\nrequest-id: req_bench_fake\r\n"
            b"transfer-encoding: chunked\r\n\r\n"
        )
        # The first event goes out with the headers; the rest one loop turn later, so the
        # client sees a first byte before the end of the stream, as with a real model.
        self.sse_first = head + chunk(events[0])
        self.sse_rest = b"".join(chunk(e) for e in events[1:]) + LAST_CHUNK

    def answer(self, head: bytes, body: bytes) -> tuple[bytes, bytes]:
        if not head.startswith(b"POST /v1/messages"):
            return NOT_FOUND, b""
        if streams(body):
            return self.sse_first, self.sse_rest
        return self.json, b""


class UpstreamProtocol(asyncio.Protocol):
    def __init__(self, answers: Responder) -> None:
        self._answers = answers
        self._buffer = b""
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        self._buffer = self._buffer + data if self._buffer else data
        while self._answer_one():
            pass

    def _answer_one(self) -> bool:
        """Answer the first complete request in the buffer; False when none is complete."""
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            return False
        head = self._buffer[:end]
        length = 0
        lower = head.lower()
        at = lower.find(b"\r\ncontent-length:")
        if at >= 0:
            stop = lower.find(b"\r\n", at + 2)
            length = int(lower[at + 17 : stop if stop > 0 else None])
        total = end + 4 + length
        if len(self._buffer) < total:
            return False
        body = self._buffer[end + 4 : total]
        self._buffer = self._buffer[total:]
        self._respond(head, body)
        return True

    def _respond(self, head: bytes, body: bytes) -> None:
        transport = self._transport
        assert transport is not None
        first, rest = self._answers.answer(head, body)
        transport.write(first)
        if rest:
            # The rest of a stream one loop turn later, so the client sees a first byte
            # before the end of the stream, as with a real model.
            asyncio.get_running_loop().call_soon(self._write_rest, transport, rest)

    def _write_rest(self, transport: asyncio.Transport, rest: bytes) -> None:
        if not transport.is_closing():
            transport.write(rest)


async def serve(host: str, port: int, answers: Responder, name: str = "fake upstream") -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: UpstreamProtocol(answers), host, port, reuse_address=True, backlog=1024
    )
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(f"{name} listening on http://{host}:{port}", flush=True)
    async with server:
        await stop.wait()


def arguments(description: str | None, model: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8999)
    parser.add_argument("--model", default=model)
    return parser.parse_args()


def main() -> None:
    args = arguments(__doc__, MODEL)
    asyncio.run(serve(args.host, args.port, Answers(args.model)))


if __name__ == "__main__":
    main()
