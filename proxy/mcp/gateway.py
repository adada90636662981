"""The MCP gateway of one worker: the SDK's session manager serving `/mcp`, the upstream
connections, the tool index and the list-change watcher. Owned by the runtime: made with it,
started on the first `/mcp` request, closed with it (stdio servers are stopped then)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from django.conf import settings
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from starlette.types import Receive, Scope, Send

from governance.policy import KeyPolicy, McpCatalog
from proxy.mcp.catalog import ToolAggregator, View, view_of
from proxy.mcp.codemode_bridge import CodeModeBridge
from proxy.mcp.server import build_server
from proxy.mcp.upstream import Upstreams
from proxy.mcp.watch import SESSION_IDLE_SECONDS, Watcher

if TYPE_CHECKING:
    from proxy.runtime import Runtime

logger = logging.getLogger("gateway.mcp")
PAGE_SIZE = 100  # tools per tools/list page
MAX_SESSIONS = 10_000  # open legacy sessions per worker
MIN_WATCH_SECONDS = 0.25


class McpGateway:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.page_size = PAGE_SIZE
        self.upstreams = Upstreams(self._tools_changed)
        self.tools = ToolAggregator(self.upstreams)
        self.codemode = CodeModeBridge()
        self.watcher = Watcher(runtime.snapshots.key_policy, self._fingerprint)
        self.server = build_server(self)
        self.manager = StreamableHTTPSessionManager(
            self.server, session_idle_timeout=SESSION_IDLE_SECONDS, max_sessions=MAX_SESSIONS
        )
        self._ready: asyncio.Future[None] | None = None
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def catalog(self) -> McpCatalog:
        # The control plane's snapshot (cached and refreshed like the routing table).
        return await self.runtime.snapshots.mcp_catalog()

    async def view(self, policy: KeyPolicy) -> View:
        catalog = await self.catalog()
        index = await self.tools.index(catalog, set(policy.granted_servers()))
        return view_of(policy, catalog, index)

    async def _fingerprint(self, policy: KeyPolicy) -> str:
        return (await self.view(policy)).fingerprint

    def _tools_changed(self, server: str) -> None:
        self.watcher.changed.set()

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one authenticated `/mcp` request (the endpoint put the caller in `scope`)."""
        await self._start()
        await self.manager.handle_request(scope, receive, send)

    async def _start(self) -> None:
        if self._ready is None:
            self._ready = asyncio.get_running_loop().create_future()
            interval = max(settings.GATEWAY_POLICY_CHECK_SECONDS, MIN_WATCH_SECONDS)
            self._tasks = [
                asyncio.create_task(self._serve(self._ready), name="mcp-sessions"),
                asyncio.create_task(self.watcher.run(interval, self._stop), name="mcp-watch"),
            ]
        await asyncio.shield(self._ready)

    async def _serve(self, ready: asyncio.Future[None]) -> None:
        """The session manager's task group lives in this task, for the runtime's life."""
        try:
            async with self.manager.run():
                ready.set_result(None)
                await self._stop.wait()
        except Exception as exc:
            logger.exception("the MCP session manager stopped")
            if not ready.done():
                ready.set_exception(exc)

    async def close(self) -> None:
        self._stop.set()
        for task in self._tasks:
            try:
                await asyncio.wait_for(task, 10)
            except TimeoutError:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            except Exception:
                logger.exception("stopping the MCP gateway failed")
        await self.upstreams.close()
        await self.codemode.close()
