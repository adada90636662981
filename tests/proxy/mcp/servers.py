"""Real MCP servers on 127.0.0.1, built with the `mcp` SDK, that record what reached them."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

import anyio
import uvicorn
from mcp.server.mcpserver import Context, MCPServer

from tests.proxy.conftest import free_port


@dataclass
class RecordingServer:
    """A Streamable HTTP MCP server in a thread; `requests` holds the headers of every request."""

    mcp: MCPServer
    legacy_only: bool = False  # refuse 2026-07-28 requests: clients fall back to initialize
    port: int = 0
    requests: list[dict[str, str]] = field(default_factory=list)
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    url: str = ""
    _server: uvicorn.Server | None = None
    _thread: threading.Thread | None = None

    def start(self) -> RecordingServer:
        app = self.mcp.streamable_http_app(host="127.0.0.1")

        async def recording(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] == "http":
                headers = {
                    k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]
                }
                self.requests.append(headers)
                if self.legacy_only and headers.get("mcp-protocol-version") == "2026-07-28":
                    await send({"type": "http.response.start", "status": 400, "headers": []})
                    await send({"type": "http.response.body", "body": b""})
                    return
            await app(scope, receive, send)

        port = self.port = self.port or free_port()
        config = uvicorn.Config(
            recording, host="127.0.0.1", port=port, log_level="warning", lifespan="on"
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True, name="mcp-upstream")
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the MCP test server did not start")
            time.sleep(0.01)
        self.url = f"http://127.0.0.1:{port}/mcp"
        return self

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            # The gateway may still hold a session stream open: do not wait for it.
            self._server.should_exit = self._server.force_exit = True
            self._thread.join(10)


def devtools_server() -> RecordingServer:
    """Tools a backend team is granted (and one it is not)."""
    mcp = MCPServer("devtools")
    recorder = RecordingServer(mcp)

    @mcp.tool()
    def echo(text: str) -> str:
        """Echo the text back."""
        recorder.calls.append(("echo", {"text": text}))
        return text

    @mcp.tool()
    def add(a: int, b: int) -> int:
        """Add two integers."""
        recorder.calls.append(("add", {"a": a, "b": b}))
        return a + b

    @mcp.tool(name="db.drop")
    def db_drop(table: str) -> str:
        """Drop a table (never granted)."""
        recorder.calls.append(("db.drop", {"table": table}))
        return f"dropped {table}"

    @mcp.tool()
    def blob(size: int) -> str:
        """A result of `size` bytes."""
        return "x" * size

    @mcp.tool()
    async def sleepy(seconds: float) -> str:
        """Sleep, unless cancelled (recorded either way)."""
        recorder.calls.append(("sleepy", {"seconds": seconds}))
        try:
            await anyio.sleep(seconds)
        except anyio.get_cancelled_exc_class():
            recorder.calls.append(("sleepy-cancelled", {}))
            raise
        return "rested"

    @mcp.tool()
    async def grow(ctx: Context) -> str:
        """Add the tool `fresh` and announce the change."""

        def fresh() -> str:
            """A tool that appeared at run time."""
            return "fresh"

        mcp.add_tool(fresh)
        await ctx.notify_tools_changed()  # 2026-07-28 clients: subscriptions/listen
        await ctx.session.send_tool_list_changed()  # session-era clients
        return "grown"

    @mcp.tool()
    async def countdown(steps: int, ctx: Context) -> str:
        """Report progress for each step."""
        for step in range(steps):
            await ctx.report_progress(step + 1, steps, f"step {step + 1}")
        return "done"

    return recorder


def legacy_server(port: int = 0) -> RecordingServer:
    """A server that speaks only the session era (its sessions live in its memory)."""
    mcp = MCPServer("legacy")
    recorder = RecordingServer(mcp, legacy_only=True, port=port)

    @mcp.tool()
    def echo(text: str) -> str:
        """Echo the text back."""
        recorder.calls.append(("echo", {"text": text}))
        return text

    return recorder


def finance_server() -> RecordingServer:
    mcp = MCPServer("finance")
    recorder = RecordingServer(mcp)

    @mcp.tool()
    def pay(amount: int) -> str:
        """Pay an amount."""
        recorder.calls.append(("pay", {"amount": amount}))
        return f"paid {amount}"

    return recorder
