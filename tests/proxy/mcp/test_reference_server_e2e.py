"""The reference server @modelcontextprotocol/server-everything behind the gateway, launched
over stdio and reached over Streamable HTTP. Installed (pinned) by scripts/install-mcp-everything
into .tools/; skipped when it is not there (no Node.js)."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import mcp_types as types
import pytest
from mcp.shared.exceptions import MCPError

from governance.policy import McpServerConfig
from tests.proxy.conftest import free_port
from tests.proxy.mcp.conftest import Team_, World, connect, grant, tool_names

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parents[3]
PACKAGE = ROOT / ".tools/mcp-everything/node_modules/@modelcontextprotocol/server-everything"
ENTRY = PACKAGE / "dist/index.js"
NODE = shutil.which("node")

if NODE is None or not ENTRY.exists():
    pytest.skip(
        "server-everything is not installed: run scripts/install-mcp-everything (needs npm)",
        allow_module_level=True,
    )


def text_of(result: types.CallToolResult) -> str:
    return "".join(block.text for block in result.content if isinstance(block, types.TextContent))


class EverythingOverHttp:
    """server-everything over Streamable HTTP on a free port (it listens where PORT says)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/mcp"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [str(NODE), str(ENTRY), "streamableHttp"],
            env={**os.environ, "PORT": str(self.port)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while True:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError("server-everything did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)


@pytest.fixture
def everything_http() -> Iterator[EverythingOverHttp]:
    server = EverythingOverHttp()
    server.start()
    yield server
    server.stop()


async def _granted_calls(gateway, backend: Team_) -> None:
    async with connect(gateway, backend.secret) as client:
        assert sorted(await tool_names(client)) == ["everything__echo", "everything__get-sum"]
        echoed = await client.call_tool("everything__echo", {"message": "through the gateway"})
        assert text_of(echoed) == "Echo: through the gateway"
        summed = await client.call_tool("everything__get-sum", {"a": 2, "b": 3})
        assert "5" in text_of(summed)
        with pytest.raises(MCPError, match="Unknown tool"):
            await client.call_tool("everything__get-env", {})


async def test_reference_server_over_stdio(gateway, world: World, backend: Team_):
    world.add_server(
        McpServerConfig(
            name="everything", transport="stdio", command=(str(NODE), str(ENTRY), "stdio")
        )
    )
    world.grant(backend.key_id, grant("everything", "echo", "get-sum"))
    await _granted_calls(gateway, backend)


async def test_reference_server_over_http(gateway, world: World, backend: Team_, everything_http):
    world.add_server(McpServerConfig(name="everything", transport="http", url=everything_http.url))
    world.grant(backend.key_id, grant("everything", "echo", "get-sum"))
    await _granted_calls(gateway, backend)
    async with connect(gateway, backend.secret, mode="auto") as client:
        assert client.protocol_version == "2026-07-28"  # stateless toward the client
        echoed = await client.call_tool("everything__echo", {"message": "modern"})
    assert text_of(echoed) == "Echo: modern"


async def test_restarted_http_server_is_reached_again(gateway, world, backend, everything_http):
    """server-everything answers a session it forgot with a plain 400 (not the 404 the
    specification asks for), so that call fails; the gateway opens a new session for the
    next."""
    world.add_server(McpServerConfig(name="everything", transport="http", url=everything_http.url))
    world.grant(backend.key_id, grant("everything", "echo"))
    async with connect(gateway, backend.secret) as client:
        first = await client.call_tool("everything__echo", {"message": "before"})
        await asyncio.to_thread(everything_http.stop)
        await asyncio.to_thread(everything_http.start)
        with pytest.raises(MCPError):
            await client.call_tool("everything__echo", {"message": "lost"})
        after = await client.call_tool("everything__echo", {"message": "after"})
    assert (text_of(first), text_of(after)) == ("Echo: before", "Echo: after")
    connection = gateway.runtime.mcp.upstreams.connection("everything")
    assert connection is not None and connection.connections == 2
