"""A fake Anthropic API on 127.0.0.1 that speaks the real wire format, with fault injection.

Tests queue `Reply` objects (or set a default) to decide what each request gets: a JSON
message, an SSE stream, an error status, an `event: error` inside a 200 stream, a dropped
connection, or a slow stream. Every request received is recorded for assertions.
"""

from __future__ import annotations

import asyncio
import collections
import json
import threading
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class Reply:
    status: int = 200
    text: str = "Hello from the fake upstream."
    model: str | None = None  # the served model; defaults to the requested one
    input_tokens: int = 25
    output_tokens: int = 12
    cache_read: int = 0
    cache_write_5m: int = 0
    cache_write_1h: int = 0
    error_type: str = "overloaded_error"
    error_message: str = "Overloaded"
    stream_error_after: int | None = None  # deltas sent before an `event: error`
    drop_after: int | None = None  # deltas sent before the connection is cut
    chunk_delay: float = 0.0
    deltas: int = 3
    truncate_body: bool = False  # JSON: promise the whole body, send half, cut the connection
    redirect_to: str | None = None  # answer 307 with this Location instead


@dataclass
class Received:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class FakeAnthropic:
    default: Reply = field(default_factory=Reply)
    received: list[Received] = field(default_factory=list)
    replies: collections.deque[Reply] = field(default_factory=collections.deque)
    # When set, only this Claude subscription token (with the OAuth beta) is accepted.
    require_oauth: str | None = None
    cancelled: int = 0
    port: int = 0
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None
    _runner: web.AppRunner | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def queue(self, *replies: Reply) -> None:
        self.replies.extend(replies)

    # --- wire format ---------------------------------------------------------------------

    def _usage(self, reply: Reply) -> dict[str, Any]:
        return {
            "input_tokens": reply.input_tokens,
            "output_tokens": reply.output_tokens,
            "cache_creation_input_tokens": reply.cache_write_5m + reply.cache_write_1h,
            "cache_read_input_tokens": reply.cache_read,
            "cache_creation": {
                "ephemeral_5m_input_tokens": reply.cache_write_5m,
                "ephemeral_1h_input_tokens": reply.cache_write_1h,
            },
            "service_tier": "standard",
        }

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.received.append(
            Received(
                request.method, request.path, request.query_string, dict(request.headers), body
            )
        )
        if self.require_oauth is not None and not self._oauth_ok(request):
            return web.json_response(
                {
                    "type": "error",
                    "error": {"type": "authentication_error", "message": "invalid bearer token"},
                },
                status=401,
            )
        reply = self.replies.popleft() if self.replies else self.default
        payload = json.loads(body)
        model = reply.model or payload.get("model", "claude-sonnet-4-6")
        if request.path.endswith("/count_tokens"):
            return web.json_response({"input_tokens": reply.input_tokens})
        if reply.redirect_to is not None:
            raise web.HTTPTemporaryRedirect(reply.redirect_to)
        if reply.status != 200:
            return web.json_response(
                {
                    "type": "error",
                    "error": {"type": reply.error_type, "message": reply.error_message},
                    "request_id": "req_fake_error",
                },
                status=reply.status,
                headers={"request-id": "req_fake_error"},
            )
        if not payload.get("stream") and reply.truncate_body:
            return await self._truncated(request, reply, model)
        if not payload.get("stream"):
            return web.json_response(
                {
                    "id": "msg_fake",
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": [{"type": "text", "text": reply.text}],
                    "stop_reason": "end_turn",
                    "stop_sequence": None,
                    "usage": self._usage(reply),
                },
                headers={"request-id": "req_fake_1"},
            )
        return await self._stream(request, reply, model)

    def _oauth_ok(self, request: web.Request) -> bool:
        betas = request.headers.get("anthropic-beta", "").split(",")
        return request.headers.get(
            "authorization"
        ) == f"Bearer {self.require_oauth}" and "oauth-2025-04-20" in [b.strip() for b in betas]

    async def _truncated(
        self, request: web.Request, reply: Reply, model: str
    ) -> web.StreamResponse:
        body = json.dumps(
            {"id": "msg_fake", "type": "message", "model": model, "usage": self._usage(reply)}
        ).encode()
        response = web.StreamResponse(
            headers={"content-type": "application/json", "content-length": str(len(body))}
        )
        await response.prepare(request)
        await response.write(body[: len(body) // 2])
        assert request.transport is not None
        request.transport.abort()
        return response

    async def _stream(self, request: web.Request, reply: Reply, model: str) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"content-type": "text/event-stream", "request-id": "req_fake_stream"}
        )
        await response.prepare(request)

        async def event(name: str, data: dict[str, Any]) -> None:
            await response.write(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode())
            if reply.chunk_delay:
                await asyncio.sleep(reply.chunk_delay)

        start_usage = {**self._usage(reply), "output_tokens": 1}
        try:
            await event(
                "message_start",
                {
                    "type": "message_start",
                    "message": {
                        "id": "msg_fake",
                        "type": "message",
                        "role": "assistant",
                        "model": model,
                        "content": [],
                        "stop_reason": None,
                        "stop_sequence": None,
                        "usage": start_usage,
                    },
                },
            )
            await event(
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": 0,
                    "content_block": {"type": "text", "text": ""},
                },
            )
            await event("ping", {"type": "ping"})
            words = reply.text.split(" ")
            per_delta = max(1, len(words) // reply.deltas)
            for sent, i in enumerate(range(0, len(words), per_delta)):
                if reply.stream_error_after is not None and sent == reply.stream_error_after:
                    await event(
                        "error",
                        {
                            "type": "error",
                            "error": {"type": reply.error_type, "message": reply.error_message},
                        },
                    )
                    return response
                if reply.drop_after is not None and sent == reply.drop_after:
                    assert request.transport is not None
                    request.transport.abort()
                    return response
                chunk = " ".join(words[i : i + per_delta])
                await event(
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": 0,
                        "delta": {"type": "text_delta", "text": chunk if i == 0 else " " + chunk},
                    },
                )
                # A cumulative usage update mid-stream, as the API may send.
                await event(
                    "message_delta",
                    {"type": "message_delta", "delta": {}, "usage": {"output_tokens": sent + 1}},
                )
            await event("content_block_stop", {"type": "content_block_stop", "index": 0})
            await event(
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                    "usage": {"output_tokens": reply.output_tokens},
                },
            )
            await event("message_stop", {"type": "message_stop"})
        except (ConnectionResetError, asyncio.CancelledError):
            self.cancelled += 1
            raise
        return response

    # --- lifecycle -----------------------------------------------------------------------

    def start(self) -> FakeAnthropic:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            app = web.Application(client_max_size=64 * 1024 * 1024)
            app.router.add_post("/v1/messages", self._messages)
            app.router.add_post("/v1/messages/count_tokens", self._messages)
            self._runner = web.AppRunner(app, access_log=None)
            loop.run_until_complete(self._runner.setup())
            site = web.TCPSite(self._runner, "127.0.0.1", 0)
            loop.run_until_complete(site.start())
            self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._runner.cleanup())
            loop.close()

        self._thread = threading.Thread(target=run, daemon=True, name="fake-anthropic")
        self._thread.start()
        ready.wait(10)
        return self

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)
