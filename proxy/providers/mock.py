"""The built-in mock provider: deterministic Anthropic-shaped replies with real usage numbers.

It lets the embedded default and the test suite run the whole flow offline, with no API key.
Token counts are derived from the prompt (4 characters per token), so the same request always
costs the same.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from typing import Any

import orjson

from governance.policy import RouteTarget
from proxy.providers.base import UpstreamCall

CHARS_PER_TOKEN = 4


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(block.get("text", "")) for block in content if isinstance(block, dict))
    return ""


def prompt_tokens(parsed: dict[str, Any]) -> int:
    """Input tokens: the system prompt, the messages and the tool definitions (a client's
    tools cost tokens on every request, which is what Code Mode and tool grants cut)."""
    text = _text_of(parsed.get("system", ""))
    for message in parsed.get("messages") or []:
        if isinstance(message, dict):
            text += _text_of(message.get("content", ""))
    tools = parsed.get("tools")
    if isinstance(tools, list) and tools:
        text += orjson.dumps(tools).decode()
    return max(1, len(text) // CHARS_PER_TOKEN)


def _last_user_text(parsed: dict[str, Any]) -> str:
    for message in reversed(parsed.get("messages") or []):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content", "")
            if isinstance(content, list):  # Claude Code puts <system-reminder> blocks first
                content = [b for b in content if isinstance(b, dict) and b.get("type") == "text"]
                content = content[-1:]
            return _text_of(content).strip()
    return ""


def reply_text(parsed: dict[str, Any], model: str) -> str:
    said = " ".join(_last_user_text(parsed).split()[-8:])
    return f"Hello from the gateway's mock provider ({model}). You said: {said}"


class MockResponse:
    def __init__(self, status: int, content_type: str, parts: list[bytes]) -> None:
        self.status = status
        self.content_type = content_type
        self.headers: list[tuple[bytes, bytes]] = [(b"request-id", b"req_mock")]
        self._parts = parts

    async def chunks(self) -> AsyncIterator[bytes]:
        for part in self._parts:
            yield part

    async def read(self) -> bytes:
        return b"".join(self._parts)

    async def close(self) -> None:
        return None


def _sse(event: dict[str, Any]) -> bytes:
    return b"event: " + str(event["type"]).encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"


class MockProvider:
    async def send(self, *, target: RouteTarget, call: UpstreamCall) -> MockResponse:
        parsed = call.parsed
        model = target.upstream_model or str(parsed.get("model", "mock"))
        input_tokens = prompt_tokens(parsed)
        if call.path.endswith("/count_tokens"):
            return MockResponse(
                200, "application/json", [orjson.dumps({"input_tokens": input_tokens})]
            )
        text = reply_text(parsed, model)
        max_tokens = parsed.get("max_tokens")
        words = text.split(" ")
        if isinstance(max_tokens, int) and 0 < max_tokens < len(words):
            words = words[:max_tokens]
        output_tokens = len(words)
        stop_reason = "end_turn" if output_tokens == len(text.split(" ")) else "max_tokens"
        message_id = "msg_mock_" + hashlib.sha256(call.body).hexdigest()[:20]
        usage = {
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        }
        if not call.stream:
            message = {
                "id": message_id,
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [{"type": "text", "text": " ".join(words)}],
                "stop_reason": stop_reason,
                "stop_sequence": None,
                "usage": usage,
            }
            return MockResponse(200, "application/json", [orjson.dumps(message)])
        start: dict[str, Any] = {
            "id": message_id,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {**usage, "output_tokens": 1},
        }
        parts = [
            _sse({"type": "message_start", "message": start}),
            _sse(
                {
                    "type": "content_block_start",
                    "index": 0,
                    "content_block": {"type": "text", "text": ""},
                }
            ),
        ]
        for index, word in enumerate(words):
            piece = word if index == 0 else " " + word
            parts.append(
                _sse(
                    {
                        "type": "content_block_delta",
                        "index": 0,
                        "delta": {"type": "text_delta", "text": piece},
                    }
                )
            )
        parts += [
            _sse({"type": "content_block_stop", "index": 0}),
            _sse(
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                    "usage": {"output_tokens": output_tokens},
                }
            ),
            _sse({"type": "message_stop"}),
        ]
        return MockResponse(200, "text/event-stream", parts)
