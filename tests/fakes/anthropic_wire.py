"""Anthropic's Messages wire format, as the fakes of Anthropic, Vertex AI and Bedrock all answer
in (Vertex and Bedrock serve Claude with Anthropic's bodies and stream events): the usage
object, a whole text message, and the events of the same message streamed.

A streamed message is `opening_events`, then `delta_events` for each of `text_pieces`, then
`closing_events`; each fake sends them in its own framing (SSE, or Bedrock's event stream) and
injects its faults between the pieces.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, Protocol

from aiohttp import web


class Tokens(Protocol):
    input_tokens: int
    output_tokens: int
    cache_read: int
    cache_write_5m: int
    cache_write_1h: int


class TextScript(Tokens, Protocol):
    """What a fake's Reply says about a streamed text message and where it breaks."""

    text: str
    deltas: int
    stream_error_after: int | None  # text pieces sent before an `event: error`
    drop_after: int | None  # text pieces sent before the connection is cut


def usage(tokens: Tokens, **extra: str) -> dict[str, Any]:
    return {
        "input_tokens": tokens.input_tokens,
        "output_tokens": tokens.output_tokens,
        "cache_creation_input_tokens": tokens.cache_write_5m + tokens.cache_write_1h,
        "cache_read_input_tokens": tokens.cache_read,
        "cache_creation": {
            "ephemeral_5m_input_tokens": tokens.cache_write_5m,
            "ephemeral_1h_input_tokens": tokens.cache_write_1h,
        },
        **extra,
    }


def message(message_id: str, model: str, text: str, usage: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": text}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": usage,
    }


def text_pieces(text: str, deltas: int) -> list[str]:
    """The text split at spaces into about `deltas` pieces, each but the first with its space."""
    words = text.split(" ")
    per_delta = max(1, len(words) // deltas)
    return [
        ("" if i == 0 else " ") + " ".join(words[i : i + per_delta])
        for i in range(0, len(words), per_delta)
    ]


def opening_events(
    message_id: str, model: str, usage: dict[str, Any], *, ping: bool
) -> list[dict[str, Any]]:
    start = {**message(message_id, model, "", usage), "content": [], "stop_reason": None}
    start["usage"] = {**usage, "output_tokens": 1}
    block = {"type": "text", "text": ""}
    events: list[dict[str, Any]] = [
        {"type": "message_start", "message": start},
        {"type": "content_block_start", "index": 0, "content_block": block},
    ]
    return [*events, {"type": "ping"}] if ping else events


def delta_events(sent: int, piece: str) -> list[dict[str, Any]]:
    """A text piece, then a cumulative usage update as the API may send mid-stream: a relay must
    overwrite the count it has, never add to it."""
    delta = {"type": "text_delta", "text": piece}
    return [
        {"type": "content_block_delta", "index": 0, "delta": delta},
        {"type": "message_delta", "delta": {}, "usage": {"output_tokens": sent + 1}},
    ]


def closing_events(output_tokens: int) -> list[dict[str, Any]]:
    return [
        {"type": "content_block_stop", "index": 0},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": {"output_tokens": output_tokens},
        },
        {"type": "message_stop"},
    ]


async def stream_text(
    request: web.Request,
    response: web.StreamResponse,
    *,
    start: tuple[str, str, dict[str, Any]],
    script: TextScript,
    error: dict[str, str],
    delay: float = 0.0,
) -> None:
    """The message as SSE on a prepared response: `start` is (message id, model, usage); `error`
    is the body of the `event: error` sent where the script says."""

    async def send(events: list[dict[str, Any]]) -> None:
        for data in events:
            await response.write(f"event: {data['type']}\ndata: {json.dumps(data)}\n\n".encode())
            if delay:
                await asyncio.sleep(delay)

    await send(opening_events(*start, ping=True))
    for sent, piece in enumerate(text_pieces(script.text, script.deltas)):
        if script.stream_error_after is not None and sent == script.stream_error_after:
            await send([{"type": "error", "error": error}])
            return
        if script.drop_after is not None and sent == script.drop_after:
            assert request.transport is not None
            request.transport.abort()
            return
        await send(delta_events(sent, piece))
    await send(closing_events(script.output_tokens))
