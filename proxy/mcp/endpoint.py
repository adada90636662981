"""`/mcp`: authenticate the virtual key (x-api-key or Authorization: Bearer, exactly as the
LLM routes), then hand the request to the MCP gateway with the caller in its ASGI scope.

Refusals are HTTP errors with a JSON-RPC error body, which MCP clients report as such (a 401
also carries `WWW-Authenticate: Bearer`). Nothing of the client's request reaches an upstream
server: the upstream connections are the gateway's own.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import orjson
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken

from governance.keyhash import hash_secret
from proxy.asgi import Incoming, Message, Receive, Scope, Send, send_bytes
from proxy.attribution import attribute
from proxy.auth import authenticate_recorded, presented_secret
from proxy.errors import GatewayError
from proxy.mcp.calls import Caller
from proxy.mcp.server import CALLER_SCOPE_KEY
from proxy.records import new_request_id
from proxy.runtime import Runtime

PATH = "/mcp"
_UNDER_PATH = f"{PATH}/"
ROUTE = "mcp"
# JSON-RPC codes for refusals before any message is read (the server-defined range).
UNAUTHORIZED = -32001
REFUSED = -32000


def handles(path: str) -> bool:
    return path == PATH or path.startswith(_UNDER_PATH)


async def serve(
    runtime: Runtime, scope: Scope, request: Incoming, receive: Receive, send: Send
) -> None:
    send = _stamped(send, request.request_id)
    if request.path.rstrip("/") != PATH:
        await _refuse(send, 404, REFUSED, f"{request.path} is not an MCP endpoint; use {PATH}.")
        return
    if not _origin_allowed(request.headers):
        await _refuse(send, 403, REFUSED, "Cross-origin requests to the MCP endpoint are refused.")
        return
    try:
        policy = await authenticate_recorded(runtime, request, ROUTE)
    except GatewayError as error:
        code = UNAUTHORIZED if error.status == 401 else REFUSED
        headers = list(error.headers)
        if error.status == 401:
            headers.append((b"www-authenticate", b'Bearer realm="claude-gateway"'))
        await _refuse(send, error.status, code, error.message, headers)
        return
    lookup_hash = hash_secret(presented_secret(request.headers))
    attribution = attribute(request.headers, None)
    caller = Caller(
        policy=policy,
        lookup_hash=lookup_hash,
        session_id=request.headers.get("mcp-session-id", "") or attribution.session_id,
        client_name=attribution.client_name,
        client_version=attribution.client_version,
        traceparent=attribution.traceparent,
        new_request_id=new_request_id,
    )
    session_id = request.headers.get("mcp-session-id", "")
    if session_id:
        runtime.mcp.watcher.seen(session_id, lookup_hash, ended=request.method == "DELETE")
    scope = dict(scope)
    scope[CALLER_SCOPE_KEY] = caller
    # A session is bound to the key that opened it: the SDK answers another key's request
    # for it as for an unknown session (404).
    scope["user"] = AuthenticatedUser(
        AccessToken(token="", client_id=f"key-{policy.key_id}", scopes=[], subject=lookup_hash)
    )
    await runtime.mcp.handle(scope, receive, send)


def _origin_allowed(headers: dict[str, str]) -> bool:
    """Browsers send Origin; a page of another site must not drive a local gateway (DNS
    rebinding). Command-line clients send none."""
    origin = headers.get("origin", "")
    if not origin:
        return True
    return urlsplit(origin).netloc.lower() == headers.get("host", "").lower()


def _stamped(send: Send, request_id: str) -> Send:
    """Every answer carries the request id, as on the LLM routes."""

    async def stamped(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = dict(message)
            message["headers"] = [
                *message.get("headers", []),
                (b"x-gateway-request-id", request_id.encode()),
            ]
        await send(message)

    return stamped


async def _refuse(
    send: Send,
    status: int,
    code: int,
    message: str,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    body = {"jsonrpc": "2.0", "id": None, "error": {"code": code, "message": message}}
    await send_bytes(send, status, orjson.dumps(body), headers=headers)
