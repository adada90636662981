"""The ASGI entry of the proxy routes.

Proxy routes bypass Django's request cycle: no middleware, no request signals, no per-request
thread hops (shared/PERFORMANCE.md measured those at 0.7-0.8 ms and up to 60 % of capacity).
Everything else (admin, API, dashboards, health) goes to Django's ASGI handler untouched.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from django.conf import settings

from proxy import handlers, runtime
from proxy.asgi import ClientGone, Incoming, Receive, Scope, Send, incoming, read_body, send_bytes
from proxy.errors import GatewayError
from telemetry import scheduler

logger = logging.getLogger("gateway.proxy")
ASGIApp = Callable[..., Awaitable[None]]
Handler = Callable[[runtime.Runtime, Incoming, Receive, Send], Awaitable[None]]
PROXY_PREFIX = "/anthropic/"

ROUTES: dict[tuple[str, str], Handler] = {
    ("POST", "/anthropic/v1/messages"): handlers.messages,
    ("POST", "/anthropic/v1/messages/count_tokens"): handlers.count_tokens,
    ("GET", "/anthropic/v1/models"): handlers.list_models,
}


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


def application(django_app: ASGIApp) -> ASGIApp:
    """Route proxy paths to the proxy, everything else to Django; handle ASGI lifespan."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(PROXY_PREFIX[:-1]):
            await proxy_app(scope, receive, send)
        elif scope["type"] == "lifespan":
            await _lifespan(receive, send)
        else:
            await django_app(scope, receive, send)

    return app


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            runtime.current()
            scheduler.start()  # periodic jobs in process when there is no Celery broker
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            try:
                await scheduler.stop()
                await runtime.shutdown()  # flushes pending usage events to the ledger
            except Exception:
                logger.exception("error while shutting the proxy down")
            await send({"type": "lifespan.shutdown.complete"})
            return
