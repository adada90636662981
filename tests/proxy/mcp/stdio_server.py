"""An MCP server over stdio, built with the `mcp` SDK, that the gateway launches in tests.

`pid` tells which process answered, `crash` kills it (the gateway must start another)."""

from __future__ import annotations

import os

from mcp.server.mcpserver import MCPServer

server = MCPServer("local-tools")


@server.tool()
def pid() -> str:
    """The process id of this server."""
    return str(os.getpid())


@server.tool()
def shout(text: str) -> str:
    """The text in capitals, with the value of the TOOL_SUFFIX environment variable."""
    return text.upper() + os.environ.get("TOOL_SUFFIX", "")


@server.tool()
def crash() -> str:
    """Exit the process at once."""
    os._exit(3)


if __name__ == "__main__":
    server.run("stdio")
