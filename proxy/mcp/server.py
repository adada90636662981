"""The downstream MCP server: the SDK's low-level server, whose handlers answer for the key
of the HTTP request that carries each message.

The SDK does the protocol (both eras: initialize and sessions with SSE, ping, cancellation and
progress; server/discover, the per-request `_meta` envelope and its header checks); the
handlers here decide what the key sees and route every tools/call through calls.py.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
from typing import TYPE_CHECKING, Any

import mcp_types as types
from mcp.server import NotificationOptions, Server
from mcp.server.caching import CacheHint
from mcp.server.context import ServerRequestContext
from mcp.server.models import InitializationOptions
from mcp.server.subscriptions import ListenHandler
from mcp.shared.dispatcher import ProgressFnT
from mcp.shared.exceptions import MCPError

from proxy.mcp import calls
from proxy.mcp.calls import Caller

if TYPE_CHECKING:
    from proxy.mcp.gateway import McpGateway

CALLER_SCOPE_KEY = "gateway.mcp.caller"  # the ASGI scope entry the endpoint fills
SERVER_NAME = "claude-gateway"
INSTRUCTIONS = (
    "The tools of the MCP servers granted to this key, each named <server>__<tool>. "
    "Servers in Code Mode are reached through the code-mode tools instead."
)
_CURSOR_PREFIX = "gw1:"


class GatewayServer(Server[Any]):
    """Announces tools.listChanged: a key's tools change when its grants or a server's list
    do, and the gateway says so (legacy sessions; modern clients through subscriptions/listen)."""

    def create_initialization_options(
        self,
        notification_options: NotificationOptions | None = None,
        experimental_capabilities: dict[str, dict[str, Any]] | None = None,
        extensions: dict[str, dict[str, Any]] | None = None,
    ) -> InitializationOptions:
        return super().create_initialization_options(
            notification_options or NotificationOptions(tools_changed=True),
            experimental_capabilities,
            extensions,
        )


def build_server(gateway: McpGateway) -> GatewayServer:
    async def list_tools(
        ctx: ServerRequestContext[Any, Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        caller = caller_of(ctx)
        view = await gateway.view(caller.policy)
        tools = gateway.codemode.meta_tools(view.code_mode, view.fingerprint)
        tools += view.direct_tools()
        offset = decode_cursor(params.cursor if params is not None else None)
        end = offset + gateway.page_size
        gateway.watcher.listed(session_key(ctx), caller.lookup_hash, ctx.session, view.fingerprint)
        return types.ListToolsResult(
            tools=tools[offset:end], next_cursor=encode_cursor(end) if end < len(tools) else None
        )

    async def call_tool(
        ctx: ServerRequestContext[Any, Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        caller = with_client_info(ctx, caller_of(ctx))
        if gateway.codemode.is_meta_tool(params.name):
            answer = await gateway.codemode.call(gateway, caller, params.name, params.arguments)
            if answer is not None:
                return answer
        return await calls.call_tool(
            gateway, caller, params.name, params.arguments, progress=progress_relay(ctx)
        )

    async def listen(
        ctx: ServerRequestContext[Any, Any], params: types.SubscriptionsListenRequestParams
    ) -> types.SubscriptionsListenResult:
        caller = caller_of(ctx)
        view = await gateway.view(caller.policy)
        bus = gateway.watcher.bus(caller.lookup_hash, view.fingerprint)
        return await ListenHandler(bus)(ctx, params)

    server = GatewayServer(
        SERVER_NAME,
        version="0.1.0",
        instructions=INSTRUCTIONS,
        # A key's list is its own (grants differ), and may change at any policy refresh.
        cache_hints={"tools/list": CacheHint(ttl_ms=0, scope="private")},
        on_list_tools=list_tools,
        on_call_tool=call_tool,
        on_subscriptions_listen=listen,
    )
    # The SDK's span per message is left out: the gateway records tool calls itself.
    server.middleware = []
    return server


def caller_of(ctx: ServerRequestContext[Any, Any]) -> Caller:
    request = ctx.request
    caller = getattr(request, "scope", {}).get(CALLER_SCOPE_KEY)
    if not isinstance(caller, Caller):  # every request passes the endpoint's authentication
        raise MCPError(types.INTERNAL_ERROR, "unauthenticated request")
    return caller


def session_key(ctx: ServerRequestContext[Any, Any]) -> str:
    """The downstream session id (legacy era), "" for a stateless request."""
    headers = getattr(ctx.request, "headers", None)
    return str(headers.get("mcp-session-id", "")) if headers is not None else ""


def with_client_info(ctx: ServerRequestContext[Any, Any], caller: Caller) -> Caller:
    """The client's own name and version (initialize, or the request's `_meta`) over what its
    User-Agent said."""
    params = ctx.session.client_params
    if params is None:
        return caller
    info = params.client_info
    return dataclasses.replace(caller, client_name=info.name, client_version=info.version)


def progress_relay(ctx: ServerRequestContext[Any, Any]) -> ProgressFnT | None:
    """Upstream progress, relayed to the client's token; None when the client asked for none
    (the upstream is then not asked either)."""
    meta = ctx.meta or {}
    if meta.get("progressToken") is None and meta.get("progress_token") is None:
        return None

    async def relay(progress: float, total: float | None, message: str | None) -> None:
        await ctx.session.report_progress(progress, total, message)

    return relay


def encode_cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(f"{_CURSOR_PREFIX}{offset}".encode()).decode()


def decode_cursor(cursor: str | None) -> int:
    if not cursor:
        return 0
    try:
        text = base64.urlsafe_b64decode(cursor.encode()).decode()
    except (binascii.Error, UnicodeError, ValueError):
        text = ""
    offset = text.removeprefix(_CURSOR_PREFIX)
    if not text.startswith(_CURSOR_PREFIX) or not offset.isdigit():
        raise MCPError(types.INVALID_PARAMS, "Invalid cursor")
    return int(offset)
