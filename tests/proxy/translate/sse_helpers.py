"""Reading the SSE the converters produce, and writing upstream streams for them."""

from __future__ import annotations

from typing import Any

import orjson


def anthropic_events(raw: bytes) -> list[dict[str, Any]]:
    """Events of an Anthropic stream; checks each frame's `event:` matches its data's type."""
    events = []
    for frame in raw.decode().split("\n\n"):
        if not frame:
            continue
        name_line, data_line = frame.split("\n")
        assert name_line.startswith("event: ")
        assert data_line.startswith("data: ")
        event = orjson.loads(data_line[6:])
        assert event["type"] == name_line[7:]
        events.append(event)
    return events


def openai_payloads(raw: bytes) -> list[Any]:
    """Data of an OpenAI stream; "[DONE]" stays a string."""
    payloads: list[Any] = []
    for frame in raw.decode().split("\n\n"):
        if not frame:
            continue
        assert frame.startswith("data: ")
        data = frame[6:]
        payloads.append(data if data == "[DONE]" else orjson.loads(data))
    return payloads


def openai_stream(chunks: list[dict[str, Any]], *, done: bool = True, crlf: bool = False) -> bytes:
    end = b"\r\n\r\n" if crlf else b"\n\n"
    raw = b"".join(b"data: " + orjson.dumps(chunk) + end for chunk in chunks)
    return raw + (b"data: [DONE]" + end if done else b"")


def anthropic_stream(events: list[dict[str, Any]], *, crlf: bool = False) -> bytes:
    nl = b"\r\n" if crlf else b"\n"
    return b"".join(
        b"event: " + event["type"].encode() + nl + b"data: " + orjson.dumps(event) + nl + nl
        for event in events
    )


def feed_in_pieces(converter: Any, raw: bytes, cuts: list[int]) -> bytes:
    """Feed `raw` split at the given offsets, then close."""
    out = b""
    start = 0
    for cut in [*sorted(set(cuts)), len(raw)]:
        out += converter.feed(raw[start:cut])
        start = cut
    closing: bytes = converter.close()
    return out + closing
