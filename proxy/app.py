"""The proxy routes as a bare ASGI app (gatewaysite/asgi.py sends /anthropic/* and /openai/*
here)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from proxy import handlers, messages, openai_routes, records, runtime
from proxy.asgi import ClientGone, Incoming, Message, Receive, Scope, Send, incoming, send_bytes
from proxy.errors import GatewayError
from proxy.hotsettings import hot
from proxy.mcp import endpoint as mcp_endpoint

logger = logging.getLogger("gateway.proxy")
Handler = Callable[[runtime.Runtime, Incoming, Receive, Send], Awaitable[None]]
PREFIXES = ("/anthropic", "/openai", mcp_endpoint.PATH)
_UNDER_PREFIXES = tuple(f"{prefix}/" for prefix in PREFIXES)

ROUTES: dict[tuple[str, str], Handler] = {
    ("POST", "/anthropic/v1/messages"): handlers.messages,
    ("POST", "/anthropic/v1/messages/count_tokens"): handlers.count_tokens,
    ("GET", "/anthropic/v1/models"): handlers.list_models,
    ("POST", "/openai/v1/chat/completions"): openai_routes.chat_completions,
    ("GET", "/openai/v1/models"): openai_routes.list_models,
}


# The routes a signed-in Claude Code session calls under GATEWAY_SIGNIN_PATH; the rest of that
# path (the sign-in protocol, managed settings, telemetry ingest) is Django's.
SESSION_ROUTES: dict[tuple[str, str], Handler] = {
    ("POST", "/v1/messages"): messages.session_messages,
    ("POST", "/v1/messages/count_tokens"): handlers.count_tokens,
    ("GET", "/v1/models"): handlers.list_models,
}
SESSION_PATHS = frozenset(path for _, path in SESSION_ROUTES)


def handles(path: str) -> bool:
    if path.startswith(_UNDER_PREFIXES) or path in PREFIXES:  # every request: no generator
        return True
    prefix = hot.signin_path
    return path.startswith(prefix + "/") and path[len(prefix) :].rstrip("/") in SESSION_PATHS


def _route(method: str, path: str) -> Handler | None:
    path = path.rstrip("/") if path != "/" else path
    handler = ROUTES.get((method, path))
    if handler is not None:
        return handler
    if method == "GET" and path.startswith("/anthropic/v1/models/"):
        return handlers.get_model
    prefix = hot.signin_path
    if path.startswith(prefix + "/"):
        return SESSION_ROUTES.get((method, path[len(prefix) :]))
    return None


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
    request.request_id = records.new_request_id()
    handler = _route(request.method, request.path)
    responder = _Responder(send)
    rt.requests_in_flight += 1
    try:
        if mcp_endpoint.handles(request.path):  # JSON-RPC, answered through the MCP SDK
            await mcp_endpoint.serve(rt, scope, request, receive, responder)
            return
        if handler is None:
            raise GatewayError(
                404,
                "not_found_error",
                f"{request.method} {request.path} is not a route of this gateway.",
            )
        await handler(rt, request, receive, responder)
    except GatewayError as error:
        if not responder.started:
            await _send_error(send, request, error)
    except ClientGone:
        return
    except Exception:
        logger.exception("request %s failed inside the gateway", request.request_id)
        if not responder.started:
            await _send_error(
                send,
                request,
                GatewayError(500, "api_error", "The gateway failed to handle this request."),
            )
    finally:
        rt.requests_in_flight -= 1


async def _send_error(send: Send, request: Incoming, error: GatewayError) -> None:
    """The error in the shape of the API the client speaks."""
    if request.path.startswith("/openai/"):
        status, body = error.openai_status_and_body(request.request_id)
    else:
        status, body = error.status, error.anthropic_body(request.request_id)
    await send_bytes(
        send,
        status,
        body,
        headers=[(b"x-gateway-request-id", request.request_id.encode()), *error.headers],
    )
