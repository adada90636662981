"""Code Mode in the gateway: the tools of servers in Code Mode (or of every server, for a key
that has it on) are replaced by the Code Mode meta-tools (codemode.py), and a program the model
writes calls them through the same governed path as a direct call (calls.call_tool: grants,
rate limits, budgets, one ledger row per call). Only the program's result returns."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

import mcp_types as types
from mcp.shared.exceptions import MCPError

from proxy.mcp import calls, codemode, sandbox
from proxy.mcp.calls import Caller, CallRefused
from proxy.mcp.names import ToolEntry, exposed_tool

if TYPE_CHECKING:
    from proxy.mcp.gateway import McpGateway

logger = logging.getLogger("gateway.mcp")
PREFIX = "codemode__"  # the meta-tools: codemode__search_tools, __get_tool, __run_program
MAX_CACHED = 256  # Code Mode tool sets kept built (stubs are derived from the schemas)


class CodeModeBridge:
    def __init__(self, limits: sandbox.Limits = codemode.DEFAULT_LIMITS) -> None:
        self.limits = limits
        self._built: dict[str, codemode.CodeMode] = {}

    def _code_mode(self, entries: tuple[ToolEntry, ...], fingerprint: str) -> codemode.CodeMode:
        built = self._built.get(fingerprint)
        if built is None:
            if len(self._built) >= MAX_CACHED:
                self._built.clear()
            built = self._built[fingerprint] = codemode.CodeMode(
                (exposed_tool(entry) for entry in entries), limits=self.limits, prefix=PREFIX
            )
        return built

    def meta_tools(self, entries: tuple[ToolEntry, ...], fingerprint: str) -> list[types.Tool]:
        """The meta-tools standing in for `entries` (none when there are none)."""
        if not entries:
            return []
        definitions = self._code_mode(entries, fingerprint).definitions()
        return [types.Tool.model_validate(definition) for definition in definitions]

    def is_meta_tool(self, name: str) -> bool:
        return name.startswith(PREFIX)

    async def call(
        self, gateway: McpGateway, caller: Caller, name: str, arguments: dict[str, Any] | None
    ) -> types.CallToolResult | None:
        """Answer a meta-tool call; None when `name` is not one of this key's meta-tools."""
        view = await gateway.view(caller.policy)
        if not view.code_mode or not self.is_meta_tool(name):
            return None
        mode = self._code_mode(view.code_mode, view.fingerprint)
        if not mode.handles(name):
            return None

        async def call_tool(tool: str, tool_arguments: dict[str, Any]) -> types.CallToolResult:
            try:
                return await calls.call_tool(
                    gateway, caller, tool, tool_arguments, refusals_raise=True
                )
            except CallRefused as refused:
                raise codemode.ToolRefused(str(refused)) from None
            except MCPError as error:  # an unknown or ungranted tool, or the upstream's error
                raise codemode.ToolRefused(error.message) from None

        answer = await mode.call(name, arguments, call_tool=call_tool)
        return types.CallToolResult.model_validate(answer)

    async def close(self) -> None:
        try:
            await asyncio.to_thread(sandbox.close_pools)
        except Exception:
            logger.exception("stopping the Code Mode sandboxes failed")
