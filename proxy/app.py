"""The proxy routes as a bare ASGI app (gatewaysite/asgi.py sends /anthropic/* here)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from proxy import handlers, runtime
from proxy.asgi import ClientGone, Incoming, Message, Receive, Scope, Send, incoming, send_bytes
from proxy.errors import GatewayError

logger = logging.getLogger("gateway.proxy")
Handler = Callable[[runtime.Runtime, Incoming, Receive, Send], Awaitable[None]]
PROXY_PREFIX = "/anthropic/"

ROUTES: dict[tuple[str, str], Handler] = {
    ("POST", "/anthropic/v1/messages"): handlers.messages,
    ("POST", "/anthropic/v1/messages/count_tokens"): handlers.count_tokens,
    ("GET", "/anthropic/v1/models"): handlers.list_models,
}


def handles(path: str) -> bool:
    return path.startswith(PROXY_PREFIX[:-1])


def _route(method: str, path: str) -> Handler | None:
    handler = ROUTES.get((method, path.rstrip("/") if path != "/" else path))
    if handler is None and method == "GET" and path.startswith("/anthropic/v1/models/"):
        handler = handlers.get_model
    return handler


class _Responder:
    """`send`, remembering whether the response has started (an error can only be sent
    before that)."""

    __slots__ = ("_send", "started")

    def __init__(self, send: Send) -> None:
        self._send = send
        self.started = False

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.started = True
        await self._send(message)


async def proxy_app(scope: Scope, receive: Receive, send: Send) -> None:
    rt = runtime.current()
    request = incoming(scope, rt.trusted_proxies)
    if request.path in ("/anthropic/api/hello", "/anthropic") and request.method in ("HEAD", "GET"):
        # Claude Code's connectivity probe, sent without a key.
        await send_bytes(send, 200, b"" if request.method == "HEAD" else b'{"ok":true}')
        return
    request.request_id = handlers.new_request_id()
    handler = _route(request.method, request.path)
    responder = _Responder(send)
    try:
        if handler is None:
            raise GatewayError(
                404,
                "not_found_error",
                f"{request.method} {request.path} is not a route of this gateway.",
            )
        await handler(rt, request, receive, responder)
    except GatewayError as error:
        if not responder.started:
            await _send_error(send, request.request_id, error)
    except ClientGone:
        return
    except Exception:
        logger.exception("request %s failed inside the gateway", request.request_id)
        if not responder.started:
            await _send_error(
                send,
                request.request_id,
                GatewayError(500, "api_error", "The gateway failed to handle this request."),
            )


async def _send_error(send: Send, request_id: str, error: GatewayError) -> None:
    await send_bytes(
        send,
        error.status,
        error.anthropic_body(request_id),
        headers=[(b"x-gateway-request-id", request_id.encode()), *error.headers],
    )
