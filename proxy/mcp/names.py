"""Namespaced tool names: `<server>__<tool>`, valid as Messages-API tool names, with the
reverse map back to the server and the upstream tool.

A name is derived from its own server and tool alone, so granting or revoking another tool
never renames it: a name that needs no change stays as it is, any other (characters outside
`A-Za-z0-9_-`, or longer than MAX_NAME_LENGTH) is cleaned and given a short hash of the
original. Claude Code shows the tools to the model as `mcp__<its server name>__<name>`, so the
names are kept well under the API's limit.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from mcp_types import Tool

logger = logging.getLogger("gateway.mcp")

SEPARATOR = "__"
MAX_NAME_LENGTH = 64
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def _digest(text: str, length: int) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def exposed_name(server: str, tool: str, *, digest_length: int = 8, hashed: bool = False) -> str:
    """The name a client sees for `tool` of `server` (`hashed`: with the hash even if the
    name needs no change, to settle a clash)."""
    raw = f"{server}{SEPARATOR}{tool}"
    if not hashed and len(raw) <= MAX_NAME_LENGTH and not _UNSAFE.search(raw):
        return raw
    clean = _UNSAFE.sub("_", raw)
    return f"{clean[: MAX_NAME_LENGTH - digest_length - 1]}_{_digest(raw, digest_length)}"


@dataclass(frozen=True, slots=True)
class ToolEntry:
    name: str  # the exposed name
    server: str
    tool: Tool  # the upstream definition, under its upstream name


class ToolIndex:
    """Every tool of every server, by exposed name (a snapshot of the upstream lists)."""

    def __init__(self, tools_by_server: Mapping[str, Sequence[Tool]]) -> None:
        self.by_name: dict[str, ToolEntry] = {}
        self.by_server: dict[str, list[ToolEntry]] = {}
        for server in sorted(tools_by_server):
            for tool in sorted(tools_by_server[server], key=lambda t: t.name):
                entry = self._place(server, tool)
                if entry is not None:
                    self.by_server.setdefault(server, []).append(entry)

    def _place(self, server: str, tool: Tool) -> ToolEntry | None:
        # A clash needs two originals that clean to the same text and share a hash prefix,
        # or a plain name equal to a cleaned one; a longer hash settles it in a fixed order.
        for length, hashed in ((8, False), (16, True)):
            name = exposed_name(server, tool.name, digest_length=length, hashed=hashed)
            if name not in self.by_name:
                entry = ToolEntry(name, server, tool)
                self.by_name[name] = entry
                return entry
            if self.by_name[name].server == server and self.by_name[name].tool.name == tool.name:
                return None  # the upstream listed the same tool twice
        logger.warning("MCP server %s: tool %r clashes with another; left out", server, tool.name)
        return None

    def entries(self, servers: Iterable[str]) -> list[ToolEntry]:
        return [entry for server in sorted(servers) for entry in self.by_server.get(server, ())]


def exposed_tool(entry: ToolEntry) -> Tool:
    """The upstream definition under its exposed name."""
    return entry.tool.model_copy(update={"name": entry.name})
