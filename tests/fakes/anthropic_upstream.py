"""A fake Anthropic API on 127.0.0.1 that speaks the real wire format, with fault injection.

Tests queue `Reply` objects (or set a default) to decide what each request gets: a JSON
message, an SSE stream, an error status, an `event: error` inside a 200 stream, a dropped
connection, or a slow stream. Every request received is recorded for assertions.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.fakes import anthropic_wire as wire
from tests.fakes.server import FakeServer, JsonBody


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
    set_cookie: str | None = None  # a Set-Cookie header on a JSON answer


@dataclass
class Received(JsonBody):
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes


@dataclass
class FakeAnthropic(FakeServer[Reply]):
    default: Reply = field(default_factory=Reply)
    received: list[Received] = field(default_factory=list)
    # When set, only this Claude subscription token (with the OAuth beta) is accepted.
    require_oauth: str | None = None
    cancelled: int = 0

    thread_name = "fake-anthropic"

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/messages", self._messages)
        app.router.add_post("/v1/messages/count_tokens", self._messages)

    # --- wire format ---------------------------------------------------------------------

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
        reply = self.next_reply()
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
            headers = {"request-id": "req_fake_1"}
            if reply.set_cookie is not None:
                headers["set-cookie"] = reply.set_cookie
            return web.json_response(
                wire.message("msg_fake", model, reply.text, _usage(reply)), headers=headers
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
            {"id": "msg_fake", "type": "message", "model": model, "usage": _usage(reply)}
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
        error = {"type": reply.error_type, "message": reply.error_message}
        try:
            await wire.stream_text(
                request,
                response,
                start=("msg_fake", model, _usage(reply)),
                script=reply,
                error=error,
                delay=reply.chunk_delay,
            )
        except (ConnectionResetError, asyncio.CancelledError):
            self.cancelled += 1
            raise
        return response


def _usage(reply: Reply) -> dict[str, Any]:
    return wire.usage(reply, service_tier="standard")
