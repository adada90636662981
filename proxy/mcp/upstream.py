"""One SDK client session per registered MCP server and worker process.

Streamable HTTP servers are reached at their configured URL with the headers of their
configuration (the client's key never goes upstream: nothing of the downstream request is
forwarded). Stdio servers are launched by the gateway (command + environment from the
configuration; the SDK passes only a safe default environment besides, never the gateway's
own secrets): one process per server per worker, started on first use, restarted with backoff
when it dies, stopped with the runtime.

Each connection is owned by one task (the SDK's sessions are structured: entered and left in
the same task), which reconnects when the transport closes. Calls wait for a connection being
made, and fail fast while a failed one backs off.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from types import TracebackType
from typing import Any, Self, TypeVar

import httpx2
import mcp_types as types
from asgiref.sync import sync_to_async
from django.conf import settings
from mcp import Client, StdioServerParameters, stdio_client
from mcp.client.session import IncomingMessage
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.dispatcher import ProgressFnT
from mcp.shared.exceptions import MCPError
from mcp.shared.message import SessionMessage
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from governance import guarded_http, outbound, policy
from governance.policy import McpServerConfig

logger = logging.getLogger("gateway.mcp")
T = TypeVar("T")

INITIAL_BACKOFF_SECONDS = 0.2
MAX_BACKOFF_SECONDS = 30.0
STABLE_SECONDS = 30.0  # a connection that lived this long starts the backoff over
TOOLS_TTL_SECONDS = 60.0  # upstream tool lists are re-read at least this often
MIN_TOOLS_TTL_SECONDS = 1.0  # a shorter ttlMs from the server is raised to this
MAX_TOOL_PAGES = 100
CLIENT_INFO = types.Implementation(name="claude-gateway", version="0.1.0")
# The SDK's own defaults: 30 s to connect or write, 300 s to read (an SSE stream may idle).
HTTP_TIMEOUT = httpx2.Timeout(30.0, read=300.0)


class UpstreamUnavailable(Exception):
    """The server cannot be reached now. The message names the server, never its URL or
    configuration (either may carry credentials)."""


def identity(config: McpServerConfig) -> tuple[object, ...]:
    """What a live connection depends on: a change to any of it replaces the connection."""
    return (
        config.transport,
        config.url,
        config.command,
        tuple(sorted(config.env.items())),
        tuple(sorted((k, tuple(sorted(v.items()))) for k, v in config.credentials.items())),
    )


class _WatchedReadStream:
    """The transport's read stream, reporting its end (the process died, the server hung up)."""

    def __init__(self, inner: Any, on_end: Callable[[], None]) -> None:
        self._inner = inner
        self._on_end = on_end

    @property
    def last_context(self) -> Any:
        return getattr(self._inner, "last_context", None)

    async def receive(self) -> SessionMessage | Exception:
        try:
            item: SessionMessage | Exception = await self._inner.receive()
        except BaseException as exc:
            if not isinstance(exc, asyncio.CancelledError):
                self._on_end()
            raise
        return item

    async def aclose(self) -> None:
        await self._inner.aclose()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> SessionMessage | Exception:
        try:
            return await self.receive()
        except Exception as exc:  # end of stream or closed: the iteration ends
            raise StopAsyncIteration from exc

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        await self.aclose()


@contextlib.asynccontextmanager
async def _watched(transport: Any, on_end: Callable[[], None]) -> AsyncIterator[Any]:
    async with transport as (read_stream, write_stream):
        yield _WatchedReadStream(read_stream, on_end), write_stream


@contextlib.asynccontextmanager
async def _http_transport(
    config: McpServerConfig, on_session_gone: Callable[[], None]
) -> AsyncIterator[Any]:
    # Checked at each (re)connection, for a clear refusal: the URL was checked when saved, but
    # a name can be re-pointed since. The client's own lookups are checked too, on the
    # addresses it connects to (governance/guarded_http.py).
    await sync_to_async(outbound.checked_addresses, thread_sensitive=False)(config.url)
    headers = dict(config.credentials.get("headers", {}))

    async def watch(response: httpx2.Response) -> None:
        # A 404 to a request naming a session: the server forgot it (the specification's
        # signal to start a new one); the request itself never ran.
        if response.status_code == 404 and "mcp-session-id" in response.request.headers:
            on_session_gone()

    async with (
        httpx2.AsyncClient(
            headers=headers,
            timeout=HTTP_TIMEOUT,
            event_hooks={"response": [watch]},
            transport=guarded_http.guarded_async_transport(),
        ) as http,
        streamable_http_client(config.url, http_client=http) as streams,
    ):
        yield streams


def _stdio_transport(config: McpServerConfig) -> Any:
    if not settings.GATEWAY_MCP_STDIO:
        raise UpstreamUnavailable(
            f'MCP server "{config.name}" is a stdio server, and this gateway launches none '
            "(GATEWAY_MCP_STDIO=false)"
        )
    if not config.command:
        raise UpstreamUnavailable(f'MCP server "{config.name}" has no command to launch')
    env = {**config.env, **config.credentials.get("env", {})}
    params = StdioServerParameters(
        command=config.command[0], args=list(config.command[1:]), env=env
    )
    return stdio_client(params, errlog=sys.stderr)


class UpstreamConnection:
    def __init__(self, config: McpServerConfig, on_tools_changed: Callable[[str], None]) -> None:
        self.config = config
        self.identity = identity(config)
        self._on_tools_changed = on_tools_changed
        self._client: Client | None = None
        self._lost = asyncio.Event()
        self._next: asyncio.Future[Client] | None = None  # the connection being made
        self._failure: str = ""  # why the last attempt failed, while backing off
        self._closing = asyncio.Event()
        self._owner: asyncio.Task[None] | None = None
        self._tools: list[types.Tool] | None = None
        self._tools_at = 0.0
        self._tools_ttl = TOOLS_TTL_SECONDS
        self._tools_generation = 0
        self._listing = asyncio.Lock()
        self.connections = 0  # sessions established so far (restarts + 1), for tests and logs
        self._sessions_gone = 0  # 404s to requests of a session (the server forgot it)

    @property
    def name(self) -> str:
        return self.config.name

    # --- the owner task -----------------------------------------------------------------

    def _start(self) -> None:
        if self._owner is None:
            self._next = asyncio.get_running_loop().create_future()
            self._owner = asyncio.get_running_loop().create_task(
                self._own(), name=f"mcp-upstream-{self.name}"
            )

    def _transport(self) -> Any:
        if self.config.transport == "stdio":
            return _stdio_transport(self.config)
        return _http_transport(self.config, self._session_gone)

    async def _own(self) -> None:
        delay = INITIAL_BACKOFF_SECONDS
        while not self._closing.is_set():
            self._failure = ""
            lost = asyncio.Event()
            connected_at: float | None = None
            try:
                async with Client(
                    _watched(self._transport(), functools.partial(self._mark_lost, lost)),
                    mode="auto",
                    cache=None,
                    client_info=CLIENT_INFO,
                    message_handler=self._on_message,
                ) as client:
                    connected_at = time.monotonic()
                    self._connected(client, lost)
                    async with self._listening(client, lost):
                        await _first_of(self._closing, lost)
            except Exception as exc:
                if connected_at is None:
                    self._failed(exc)
            finally:
                self._client = None
            if self._closing.is_set():
                break
            if connected_at is not None:
                logger.warning("MCP server %s: connection lost; reconnecting", self.name)
                self._mark_lost(lost)
                if time.monotonic() - connected_at >= STABLE_SECONDS:
                    delay = INITIAL_BACKOFF_SECONDS
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), delay)
            delay = min(delay * 2, MAX_BACKOFF_SECONDS)
        self._reject(UpstreamUnavailable(f'MCP server "{self.name}" is shut down'))

    @contextlib.asynccontextmanager
    async def _listening(self, client: Client, lost: asyncio.Event) -> AsyncIterator[None]:
        """A 2026-07-28 server tells of list changes only on a `subscriptions/listen`
        stream (a legacy one on its session's stream, see _on_message)."""
        capabilities = client.server_capabilities.tools
        if client.protocol_version not in MODERN_PROTOCOL_VERSIONS or not (
            capabilities and capabilities.list_changed
        ):
            yield
            return
        listener = asyncio.create_task(self._listen(client, lost), name=f"mcp-listen-{self.name}")
        try:
            yield
        finally:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener

    async def _listen(self, client: Client, lost: asyncio.Event) -> None:
        delay = INITIAL_BACKOFF_SECONDS
        while not lost.is_set():
            try:
                async with client.listen(tools_list_changed=True) as subscription:
                    delay = INITIAL_BACKOFF_SECONDS
                    async for _event in subscription:
                        self.invalidate_tools()
                        self._on_tools_changed(self.name)
            except Exception as exc:  # the stream dropped: listen again (no replay: re-list)
                logger.debug("MCP server %s: listen stream ended (%s)", self.name, exc)
            self.invalidate_tools()
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_BACKOFF_SECONDS)

    def _connected(self, client: Client, lost: asyncio.Event) -> None:
        self._client, self._lost = client, lost
        self.connections += 1
        self.invalidate_tools()  # a restarted server may list other tools
        if self._next is not None and not self._next.done():
            self._next.set_result(client)
        if self.connections > 1:
            self._on_tools_changed(self.name)

    def _mark_lost(self, lost: asyncio.Event) -> None:
        """The transport ended: callers from now on wait for the next connection."""
        lost.set()
        if self._next is None or self._next.done():
            self._next = asyncio.get_running_loop().create_future()

    def _failed(self, exc: Exception) -> None:
        reason = str(exc) if isinstance(exc, UpstreamUnavailable) else type(exc).__name__
        if isinstance(exc, outbound.ForbiddenDestination):
            reason = "its address is not allowed (GATEWAY_OUTBOUND_ALLOWED_NETWORKS)"
        self._failure = reason
        logger.warning("MCP server %s: cannot connect (%s)", self.name, reason)
        self._reject(UpstreamUnavailable(f'MCP server "{self.name}" is unreachable ({reason})'))
        self._next = asyncio.get_running_loop().create_future()

    def _reject(self, exc: Exception) -> None:
        if self._next is not None and not self._next.done():
            self._next.set_exception(exc)
            self._next.exception()  # retrieved: waiters (if any) re-raise it themselves

    async def _on_message(self, message: IncomingMessage) -> None:
        if isinstance(message, types.ToolListChangedNotification):
            self.invalidate_tools()
            self._on_tools_changed(self.name)

    # --- use -------------------------------------------------------------------------------

    async def _session(self) -> Client:
        if self._closing.is_set():
            raise UpstreamUnavailable(f'MCP server "{self.name}" is shut down')
        self._start()
        if self._client is not None and not self._lost.is_set():
            return self._client
        if self._failure:
            raise UpstreamUnavailable(f'MCP server "{self.name}" is unreachable ({self._failure})')
        pending = self._next
        assert pending is not None  # made by _start, renewed whenever a connection ends
        try:
            async with asyncio.timeout(self.config.timeout_seconds):
                return await asyncio.shield(pending)
        except TimeoutError:
            raise UpstreamUnavailable(
                f'MCP server "{self.name}" did not connect within {self.config.timeout_seconds:g} s'
            ) from None

    def _session_gone(self) -> None:
        self._sessions_gone += 1

    def invalidate_tools(self) -> None:
        self._tools = None
        self._tools_generation += 1

    async def list_tools(self) -> list[types.Tool]:
        """Every tool the server lists (all pages), cached for the list's time to live."""
        if self._tools is not None and time.monotonic() - self._tools_at < self._tools_ttl:
            return self._tools
        async with self._listing:
            if self._tools is not None and time.monotonic() - self._tools_at < self._tools_ttl:
                return self._tools
            generation, started = self._tools_generation, time.monotonic()
            tools, ttl = await self._in_session(self._list_all)
            if generation == self._tools_generation:  # not invalidated meanwhile
                self._tools, self._tools_at, self._tools_ttl = tools, started, ttl
            await _remember(self.name, tools)
            return tools

    async def _list_all(self, client: Client) -> tuple[list[types.Tool], float]:
        tools: list[types.Tool] = []
        cursor: str | None = None
        ttl = TOOLS_TTL_SECONDS
        for _ in range(MAX_TOOL_PAGES):
            page = await client.list_tools(cursor=cursor)
            tools.extend(page.tools)
            if page.ttl_ms:
                ttl = min(ttl, max(MIN_TOOLS_TTL_SECONDS, page.ttl_ms / 1000))
            cursor = page.next_cursor
            if not cursor:
                break
        return tools, ttl

    async def call_tool(
        self, name: str, arguments: dict[str, Any] | None, progress: ProgressFnT | None = None
    ) -> types.CallToolResult:
        async def call(client: Client) -> types.CallToolResult:
            return await client.call_tool(name, arguments, progress_callback=progress)

        return await self._in_session(call)

    async def _in_session(self, operation: Callable[[Client], Awaitable[T]]) -> T:
        """Run `operation` on the live session, within the server's timeout. A session the
        server no longer knows (it restarted: 404) never ran the request, so the request is
        sent once more on a new session."""
        for attempt in range(2):
            client = await self._session()
            gone_before = self._sessions_gone
            try:
                async with asyncio.timeout(self.config.timeout_seconds):
                    return await operation(client)
            except MCPError as error:
                gone = self._sessions_gone != gone_before
                if gone or _server_failed(error):
                    logger.warning("MCP server %s: session lost; opening a new one", self.name)
                    self._mark_lost(self._lost)
                if attempt or not gone:
                    raise
        raise AssertionError("unreachable")

    async def close(self) -> None:
        self._closing.set()
        if self._owner is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._owner), 10)
            except TimeoutError:
                self._owner.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await self._owner
            except Exception:
                logger.exception("MCP server %s: error while closing", self.name)


def _server_failed(error: MCPError) -> bool:
    """The SDK's stand-in for an HTTP error status without a JSON-RPC answer: whatever the
    server's state, a new session is opened for the next call (a server that forgot the
    session without saying 404 answers like this)."""
    return (
        error.code == types.INTERNAL_ERROR and error.message == "Server returned an error response"
    )


async def _remember(server: str, tools: list[types.Tool]) -> None:
    """Tell the admin's "tools this key can see" preview what the server lists."""
    try:
        await policy.aremember_mcp_tools(server, [tool.name for tool in tools])
    except Exception as exc:  # the shared cache is down: the preview falls back to patterns
        logger.debug("could not remember the tools of %s (%s)", server, type(exc).__name__)


async def _first_of(*events: asyncio.Event) -> None:
    waiters = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


class Upstreams:
    """The connections of this worker, by server name; a server whose configuration changed
    gets a new connection (the old one closes in the background)."""

    def __init__(self, on_tools_changed: Callable[[str], None]) -> None:
        self._on_tools_changed = on_tools_changed
        self._connections: dict[str, UpstreamConnection] = {}
        self._closing: set[asyncio.Task[None]] = set()

    def get(self, config: McpServerConfig) -> UpstreamConnection:
        connection = self._connections.get(config.name)
        if connection is not None and connection.identity == identity(config):
            connection.config = config  # prices, timeout, code mode: no reconnection needed
            return connection
        if connection is not None:
            self._retire(connection)
        connection = self._connections[config.name] = UpstreamConnection(
            config, self._on_tools_changed
        )
        return connection

    def retain(self, names: set[str]) -> None:
        """Close the connections of servers no longer in the catalog."""
        for name in [n for n in self._connections if n not in names]:
            self._retire(self._connections.pop(name))

    def _retire(self, connection: UpstreamConnection) -> None:
        task = asyncio.get_running_loop().create_task(connection.close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def connection(self, name: str) -> UpstreamConnection | None:
        return self._connections.get(name)

    async def close(self) -> None:
        connections, self._connections = list(self._connections.values()), {}
        await asyncio.gather(*(c.close() for c in connections), *self._closing)
