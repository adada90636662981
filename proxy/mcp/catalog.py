"""The tools a key sees: every catalog server's tools, namespaced, filtered by the key's grants,
and for the servers in Code Mode replaced by the Code Mode meta-tools."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from dataclasses import dataclass, field

import mcp_types as types
import orjson

from governance.policy import KeyPolicy, McpCatalog, McpServerConfig
from proxy.mcp.names import ToolEntry, ToolIndex, exposed_tool
from proxy.mcp.upstream import Upstreams

logger = logging.getLogger("gateway.mcp")
FAILURE_LOG_SECONDS = 60.0  # one warning per unreachable server per minute
MAX_INDEXES = 256  # distinct sets of granted servers kept indexed


@dataclass(frozen=True, slots=True)
class View:
    """What one key sees of one index."""

    direct: tuple[ToolEntry, ...]  # granted tools of servers not in Code Mode
    code_mode: tuple[ToolEntry, ...]  # granted tools of servers in Code Mode
    fingerprint: str = field(default="")

    def direct_tools(self) -> list[types.Tool]:
        return [exposed_tool(entry) for entry in self.direct]


def _fingerprint(direct: tuple[ToolEntry, ...], code_mode: tuple[ToolEntry, ...]) -> str:
    """Changes whenever the client's list would: a tool in or out, or a definition changed."""
    digest = hashlib.sha256()
    for kind, entries in ((b"d", direct), (b"c", code_mode)):
        for entry in entries:
            digest.update(kind + entry.name.encode() + b"\0")
            digest.update(orjson.dumps(entry.tool.model_dump(mode="json", exclude_none=True)))
    return digest.hexdigest()


def view_of(policy: KeyPolicy, catalog: McpCatalog, index: ToolIndex) -> View:
    direct: list[ToolEntry] = []
    coded: list[ToolEntry] = []
    granted = sorted(s for s in policy.granted_servers() if s in catalog.servers)
    for entry in index.entries(granted):
        if policy.tool_allowed(entry.server, entry.tool.name):
            target = coded if policy.uses_code_mode(catalog.servers[entry.server]) else direct
            target.append(entry)
    return View(tuple(direct), tuple(coded), _fingerprint(tuple(direct), tuple(coded)))


class ToolAggregator:
    """The tool index of a catalog, rebuilt only when an upstream list or the catalog changed."""

    def __init__(self, upstreams: Upstreams) -> None:
        self._upstreams = upstreams
        # Keyed by the identities of the lists indexed; the lists are kept alongside so an id
        # cannot be reused by another list while its entry exists.
        self._built: dict[tuple[object, ...], tuple[list[list[types.Tool]], ToolIndex]] = {}
        self._failures: dict[str, float] = {}

    async def index(self, catalog: McpCatalog, servers: set[str] | None = None) -> ToolIndex:
        """The index over the catalog's servers (only `servers` of them, when given: a key's
        listing never waits for, or launches, a server it has no grant for). Names depend on
        the servers indexed only when two tools clash (names.py)."""
        names = sorted(catalog.servers if servers is None else servers & set(catalog.servers))
        self._upstreams.retain(set(catalog.servers))
        lists = await asyncio.gather(*(self._tools(catalog.servers[name]) for name in names))
        identity = tuple((name, id(tools)) for name, tools in zip(names, lists, strict=True))
        built = self._built.get(identity)
        if built is None:
            if len(self._built) >= MAX_INDEXES:
                self._built.clear()
            built = self._built[identity] = (
                list(lists),
                ToolIndex(dict(zip(names, lists, strict=True))),
            )
        return built[1]

    async def _tools(self, config: McpServerConfig) -> list[types.Tool]:
        """The server's tools; none while it cannot be reached (the other servers still serve)."""
        try:
            tools = await self._upstreams.get(config).list_tools()
        except Exception as exc:
            now = time.monotonic()
            if now - self._failures.get(config.name, float("-inf")) >= FAILURE_LOG_SECONDS:
                self._failures[config.name] = now
                logger.warning(
                    "MCP server %s: cannot list its tools (%s); left out of tools/list",
                    config.name,
                    exc if isinstance(exc, TimeoutError | ConnectionError) else type(exc).__name__,
                )
            return _NO_TOOLS
        self._failures.pop(config.name, None)
        return tools


_NO_TOOLS: list[types.Tool] = []
