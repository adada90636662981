"""The proxy routes as a bare ASGI app (gatewaysite/asgi.py sends /anthropic/* here)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from django.conf import settings

from proxy import handlers, runtime
from proxy.asgi import ClientGone, Incoming, Receive, Scope, Send, incoming, read_body, send_bytes
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


async def proxy_app(scope: Scope, receive: Receive, send: Send) -> None:
    request = incoming(scope)
    if request.path in ("/anthropic/api/hello", "/anthropic") and request.method in ("HEAD", "GET"):
        # Claude Code's connectivity probe, sent without a key.
        await send_bytes(send, 200, b"" if request.method == "HEAD" else b'{"ok":true}')
        return
    handler = _route(request.method, request.path)
    rt = runtime.current()
    request_id = ""
    try:
        if handler is None:
            raise GatewayError(
                404,
                "not_found_error",
                f"{request.method} {request.path} is not a route of this gateway.",
            )
        if request.method == "POST":
            request.body = await read_body(receive, request, settings.GATEWAY_MAX_BODY_BYTES)
        await handler(rt, request, receive, send)
    except GatewayError as error:
        request_id = handlers.new_request_id()
        await send_bytes(
            send,
            error.status,
            error.anthropic_body(request_id),
            headers=[(b"x-gateway-request-id", request_id.encode()), *error.headers],
        )
    except ClientGone:
        return
