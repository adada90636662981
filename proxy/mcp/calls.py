"""One governed tool call: grant re-check, rate limits and budget reservation, the upstream
call, settlement at the tool's price, and one usage event.

Every path a tool call can take comes through `call_tool`: a client's tools/call and every
call a Code Mode program makes. A name the key may not use is refused exactly like a name no
server has ("Unknown tool"), so guessing names reveals nothing.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio
import mcp_types as types
import orjson
from mcp.shared.dispatcher import ProgressFnT
from mcp.shared.exceptions import MCPError

from governance.policy import KeyPolicy, McpServerConfig, ToolPrice
from proxy import admission
from proxy.counters.base import CounterStoreUnavailable, Outcome, RateKind
from proxy.errors import GatewayError
from proxy.mcp.names import ToolEntry
from proxy.mcp.upstream import UpstreamUnavailable
from telemetry import observe

if TYPE_CHECKING:
    from proxy.mcp.gateway import McpGateway

logger = logging.getLogger("gateway.mcp")
ROUTE = "mcp.tool"
# A tool call is one request for the request-rate and concurrency limits; it has no tokens.
RATE_KINDS = frozenset({RateKind.REQUESTS, RateKind.CONCURRENT})
MAX_ERROR_MESSAGE = 300


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is calling, from the authenticated HTTP request that carries the call."""

    policy: KeyPolicy
    new_request_id: Callable[[], str]  # the ledger's id for each call (proxy.records)
    lookup_hash: str = ""  # binds sessions and list-change notices to the key; never logged
    session_id: str = ""
    client_name: str = ""
    client_version: str = ""
    traceparent: str = ""  # validated; the call's span joins the client's trace


class CallRefused(Exception):
    """The gateway refused the call (rate limit, budget, counter store down): the message is
    for the client."""


def unknown_tool(name: str) -> MCPError:
    return MCPError(types.INVALID_PARAMS, f"Unknown tool: {name}")


def result_size(result: types.CallToolResult) -> int:
    return len(orjson.dumps(result.model_dump(mode="json", by_alias=True, exclude_none=True)))


def _error_result(message: str) -> types.CallToolResult:
    """A failure the model should read (and may act on: wait, or stop), not a protocol error."""
    text = types.TextContent(type="text", text=message)
    return types.CallToolResult(content=[text], is_error=True)


class ToolCall:
    """The ledger row of one call, filled as the call proceeds."""

    def __init__(self, caller: Caller, name: str) -> None:
        self.started = time.perf_counter()
        self.caller = caller
        self.event: dict[str, Any] = {
            "request_id": caller.new_request_id(),
            "created_at": dt.datetime.now(dt.UTC),
            "route": ROUTE,
            "stream": False,
            "tool_name": name[:128],
            "session_id": caller.session_id[:100],
            "client_name": caller.client_name[:60],
            "client_version": caller.client_version[:40],
            "organization_id": caller.policy.organization_id,
            "team_id": caller.policy.team_id,
            "project_id": caller.policy.project_id,
            "key_id": caller.policy.key_id,
            "parent_key_id": caller.policy.parent_id,
            "key_name": caller.policy.key_name,
        }
        if caller.traceparent:  # for the span only: the ledger has no column for it
            self.event["traceparent"] = caller.traceparent

    def target(self, entry: ToolEntry) -> None:
        self.event.update(
            tool_server=entry.server[:64],
            tool_name=entry.tool.name[:128],
            provider=f"mcp:{entry.server}",
        )

    def finish(self, status: int, error_type: str = "", message: str = "", **extra: Any) -> None:
        self.event.update(
            status=status,
            error_type=error_type,
            error_message=message[:MAX_ERROR_MESSAGE],
            latency_ms=int((time.perf_counter() - self.started) * 1000),
            **extra,
        )


async def call_tool(
    gateway: McpGateway,
    caller: Caller,
    name: str,
    arguments: dict[str, Any] | None,
    *,
    progress: ProgressFnT | None = None,
    refusals_raise: bool = False,
) -> types.CallToolResult:
    """Call the tool the client knows as `name` for `caller`, governed and metered.

    Raises MCPError (-32602) for a name the key may not use, and relays a JSON-RPC error of
    the upstream server; every other failure is a result with isError (the model reads it),
    except the gateway's own refusals when `refusals_raise` (CallRefused: a Code Mode program
    stops at them).
    """
    call = ToolCall(caller, name)
    try:
        return await _governed(
            gateway, call, name, arguments, progress=progress, refusals_raise=refusals_raise
        )
    except MCPError as error:
        if "status" not in call.event:
            call.finish(502, "api_error", f"upstream error {error.code}: {error.message}")
        raise
    except BaseException as exc:
        if "status" not in call.event:
            if isinstance(exc, Exception):
                call.finish(500, "api_error", f"the gateway failed: {type(exc).__name__}")
            else:  # cancelled: the client cancelled the call or went away
                call.finish(499, "", "", client_disconnected=True)
        raise
    finally:
        gateway.runtime.usage.put(call.event)
        observe.tool_call_finished(call.event, caller.policy, started=call.started)


async def _governed(
    gateway: McpGateway,
    call: ToolCall,
    name: str,
    arguments: dict[str, Any] | None,
    *,
    progress: ProgressFnT | None,
    refusals_raise: bool,
) -> types.CallToolResult:
    policy = call.caller.policy
    catalog = await gateway.catalog()
    entry = (await gateway.tools.index(catalog, set(policy.granted_servers()))).by_name.get(name)
    if entry is None or entry.server not in catalog.servers:
        call.finish(404, "not_found_error", "no such tool")
        raise unknown_tool(name)
    call.target(entry)
    refusal = policy.tool_refusal(entry.server, entry.tool.name)
    if refusal:
        call.finish(403, "permission_error", refusal)
        raise unknown_tool(name)
    config = catalog.servers[entry.server]
    price = config.price_of(entry.tool.name)
    try:
        plan = await _admit(gateway, policy, entry.server, price, call.event["request_id"])
    except GatewayError as refused:
        call.finish(refused.status, refused.error_type, refused.message)
        if refusals_raise:
            raise CallRefused(refused.message) from None
        return _error_result(refused.message)
    cost = 0
    try:
        result, cost = await _call_upstream(
            gateway, call, config, entry, arguments, progress=progress
        )
    finally:
        with anyio.CancelScope(shield=True):  # a cancelled call still frees its reservation
            await _settle(gateway, plan, cost)
    return result


async def _call_upstream(
    gateway: McpGateway,
    call: ToolCall,
    config: McpServerConfig,
    entry: ToolEntry,
    arguments: dict[str, Any] | None,
    *,
    progress: ProgressFnT | None,
) -> tuple[types.CallToolResult, int]:
    connection = gateway.upstreams.get(config)
    try:
        result = await connection.call_tool(entry.tool.name, arguments, progress)
    except UpstreamUnavailable as exc:
        call.finish(502, "api_error", str(exc))
        return _error_result(str(exc)), 0
    except TimeoutError:
        message = f'MCP server "{config.name}" did not answer within {config.timeout_seconds:g} s'
        call.finish(504, "timeout_error", message)
        return _error_result(message), 0
    except MCPError as error:
        if error.code == types.CONNECTION_CLOSED:
            message = f'MCP server "{config.name}" closed the connection during the call'
            call.finish(502, "api_error", message)
            return _error_result(message), 0
        refused = error.code in (types.INVALID_PARAMS, types.INVALID_REQUEST)
        call.finish(
            400 if refused else 502,
            "invalid_request_error" if refused else "api_error",
            error.message,
        )
        raise
    size = result_size(result)
    cost = config.price_of(entry.tool.name).cost_micros(size)
    call.finish(
        200,
        "tool_error" if result.is_error else "",
        "",
        result_bytes=size,
        cost_micros=cost,
    )
    return result, cost


async def _admit(
    gateway: McpGateway, policy: KeyPolicy, server: str, price: ToolPrice, request_id: str
) -> admission.Plan | None:
    """Reserve the call's price on every budget it counts against and take its rate-limit
    slots; raise the refusal when one is out."""
    # The first kilobyte of the result is reserved with the call: most results fit in it.
    est = admission.Estimate(reserve_micros=price.per_call_micros + price.per_kb_micros, tokens=0)
    plan = admission.build_plan(
        policy=policy,
        model="",
        provider=f"mcp:{server}",
        est=est,
        now=dt.datetime.now(dt.UTC),
        reservation_id=request_id,
        rate_kinds=RATE_KINDS,
    )
    if not plan.counters.budgets and not plan.counters.rates:
        return None
    runtime = gateway.runtime
    try:
        result = await admission.admit(store=runtime.store, plan=plan, seed=runtime.seed_budget)
    except CounterStoreUnavailable:
        if policy.fail_open:
            logger.warning("counter store unavailable; admitting a tool call (fails open)")
            return None
        raise GatewayError(
            503,
            "api_error",
            "The gateway cannot check budgets right now (counter store unavailable) and "
            f'organization "{policy.organization_name}" is set to fail closed. Retry shortly.',
        ) from None
    if result.admitted:
        return plan
    if result.outcome == Outcome.RATE_LIMITED:
        raise admission.rate_refusal(plan=plan, result=result)
    raise admission.budget_refusal(plan=plan, result=result, policy=policy)


async def _settle(gateway: McpGateway, plan: admission.Plan | None, cost: int) -> None:
    if plan is None:
        return
    runtime = gateway.runtime
    try:
        await runtime.store.settle(plan.counters, cost_micros=cost, tokens=0)
    except CounterStoreUnavailable:
        runtime.pending_releases.add(plan.counters)
    except Exception:
        logger.exception("settling a tool call failed; its reservation expires on its own")
