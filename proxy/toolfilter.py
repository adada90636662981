"""MCP grants applied to the tool definitions inside a Messages request.

Claude Code names the tools of its MCP servers `mcp__<server>__<tool>` (and the tools it
reaches through the gateway's own /mcp, added under any name, `mcp__<name>__<server>__<tool>`).
Tools of a server registered on the gateway that the key's grants do not allow are removed
before the request is forwarded, so the model never sees a tool outside the team's scope,
whichever way the tools reached the client. Servers the gateway does not know are left alone:
registering a server (even with no grant) is how it becomes governed.
"""

from __future__ import annotations

from typing import Any

from governance.policy import KeyPolicy, McpCatalog

MCP_TOOL_PREFIX = "mcp__"


def names_mcp_tools(parsed: dict[str, Any]) -> bool:
    """Cheap check before any catalog lookup: does the request define an MCP tool at all?"""
    tools = parsed.get("tools")
    return isinstance(tools, list) and any(
        isinstance(t, dict) and str(t.get("name", "")).startswith(MCP_TOOL_PREFIX) for t in tools
    )


def governed_tool(name: str, catalog: McpCatalog) -> tuple[str, str] | None:
    """(server, tool) when `name` is a tool of a server registered on the gateway."""
    if not name.startswith(MCP_TOOL_PREFIX):
        return None
    parts = name[len(MCP_TOOL_PREFIX) :].split("__")
    if len(parts) >= 2 and parts[0] in catalog.servers:
        return parts[0], "__".join(parts[1:])
    if len(parts) >= 3 and parts[1] in catalog.servers:
        return parts[1], "__".join(parts[2:])
    return None


def without_ungranted_tools(
    parsed: dict[str, Any], policy: KeyPolicy, catalog: McpCatalog
) -> tuple[dict[str, Any], list[str]]:
    """The request without the MCP tools the key may not use, and the names removed (the
    request unchanged, and an empty list, when nothing is removed)."""
    removed: list[str] = []
    kept: list[Any] = []
    for tool in parsed["tools"]:
        name = tool.get("name") if isinstance(tool, dict) else None
        found = governed_tool(name, catalog) if isinstance(name, str) else None
        if found is not None and not policy.tool_allowed(*found):
            removed.append(str(name))
        else:
            kept.append(tool)
    if not removed:
        return parsed, removed
    filtered = {**parsed, "tools": kept}
    if not kept:
        del filtered["tools"]
    choice = filtered.get("tool_choice")
    if isinstance(choice, dict) and (
        not kept or (choice.get("type") == "tool" and choice.get("name") in removed)
    ):
        del filtered["tool_choice"]  # it named a removed tool, or there are no tools left
    return filtered, removed
