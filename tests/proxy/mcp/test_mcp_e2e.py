"""/mcp end to end: grants, namespacing, the client's key, both protocol eras, metering."""

from __future__ import annotations

import asyncio
import os
from typing import Any, cast

import httpx
import mcp_types as types
import orjson
import pytest
from mcp.shared.exceptions import MCPError

from governance.models import RateLimit, VirtualKey
from governance.policy import McpServerConfig, ToolPrice
from governance.services import common, keys
from proxy.mcp.names import exposed_name
from tests import factories
from tests.clock import within_one_window
from tests.proxy.conftest import ACTOR, GatewayServer, ledger_rows, wait_for
from tests.proxy.mcp.conftest import (
    Team_,
    World,
    connect,
    grant,
    http_config,
    in_db,
    stdio_config,
    tool_names,
)
from tests.proxy.mcp.servers import RecordingServer, legacy_server

pytestmark = pytest.mark.django_db(transaction=True)


def text_of(result: types.CallToolResult) -> str:
    return "".join(block.text for block in result.content if isinstance(block, types.TextContent))


@pytest.fixture
def granted(world: World, backend: Team_, devtools: RecordingServer, finance: RecordingServer):
    """devtools and finance registered; the backend team granted devtools' echo and add."""
    world.add_server(http_config("devtools", devtools))
    world.add_server(http_config("finance", finance))
    world.grant(backend.key_id, grant("devtools", "echo", "add", "blob", "countdown", "sleepy"))
    return world


async def test_team_sees_and_calls_only_its_granted_tools(
    gateway: GatewayServer, granted: World, backend: Team_, devtools: RecordingServer
):
    async with connect(gateway, backend.secret) as client:
        assert sorted(await tool_names(client)) == [
            "devtools__add",
            "devtools__blob",
            "devtools__countdown",
            "devtools__echo",
            "devtools__sleepy",
        ]
        result = await client.call_tool("devtools__add", {"a": 2, "b": 40})
    assert text_of(result) == "42" and not result.is_error
    assert devtools.calls == [("add", {"a": 2, "b": 40})]


@pytest.mark.parametrize(
    "name", ["finance__pay", exposed_name("devtools", "db.drop"), "devtools__nothing"]
)
async def test_guessed_name_of_ungranted_tool_is_refused_as_unknown(
    gateway, granted, backend, name, request
):
    devtools, finance = request.getfixturevalue("devtools"), request.getfixturevalue("finance")
    async with connect(gateway, backend.secret) as client:
        await tool_names(client)
        with pytest.raises(MCPError) as refused:
            await client.call_tool(name, {"amount": 5, "table": "users"})
    assert refused.value.code == types.INVALID_PARAMS
    assert refused.value.message == f"Unknown tool: {name}"
    assert finance.calls == [] and devtools.calls == []


async def test_upstream_never_sees_the_clients_key(
    gateway, world: World, backend: Team_, devtools: RecordingServer
):
    world.add_server(
        http_config(
            "devtools",
            devtools,
            credentials={"headers": {"Authorization": "Bearer upstream-token"}},
        )
    )
    world.grant(backend.key_id, grant("devtools", "*"))
    async with connect(gateway, backend.secret) as client:
        await client.call_tool("devtools__echo", {"text": "hi"})
    assert devtools.requests
    for headers in devtools.requests:
        assert headers.get("authorization") == "Bearer upstream-token"
        assert all(backend.secret not in value for value in headers.values())


async def test_server_at_a_forbidden_address_is_never_contacted(gateway, world, backend, devtools):
    """The outbound guard (GATEWAY_OUTBOUND_ALLOWED_NETWORKS) holds for MCP servers too: the
    metadata service's address is refused before any connection, the other servers serve."""
    world.add_server(http_config("devtools", devtools))
    world.add_server(
        McpServerConfig(name="metadata", transport="http", url="http://169.254.169.254/mcp")
    )
    world.grant(backend.key_id, grant("devtools", "echo"), grant("metadata", "*"))
    async with connect(gateway, backend.secret) as client:
        assert await tool_names(client) == ["devtools__echo"]
    connection = gateway.runtime.mcp.upstreams.connection("metadata")
    assert connection is not None and connection.connections == 0


async def test_stateless_2026_era_lists_and_calls(gateway, granted, backend, devtools):
    async with connect(gateway, backend.secret, mode="auto") as client:
        assert client.protocol_version == "2026-07-28"
        assert "devtools__echo" in await tool_names(client)
        result = await client.call_tool("devtools__echo", {"text": "modern"})
    assert text_of(result) == "modern"


@pytest.mark.filterwarnings("ignore:ping is removed")  # a legacy-era feature, tested as such
async def test_session_era_negotiates_2025_11_25_with_a_gateway_session(
    gateway, granted, backend, devtools
):
    async with connect(gateway, backend.secret, mode="legacy") as client:
        assert client.protocol_version == "2025-11-25"
        assert client.server_capabilities.tools is not None
        assert client.server_capabilities.tools.list_changed is True
        await client.send_ping()
        assert text_of(await client.call_tool("devtools__echo", {"text": "x"})) == "x"


def _post(
    gateway: GatewayServer, secret: str, body: dict[str, Any], **headers: str
) -> httpx.Response:
    auth = {"Authorization": f"Bearer {secret}"} if secret else {}
    return httpx.post(
        gateway.base_url + "/mcp",
        json=body,
        headers={"Accept": "application/json, text/event-stream", **auth, **headers},
    )


def _sse_result(response: httpx.Response) -> dict[str, Any]:
    """The JSON-RPC answer, from a JSON body or the last event of an SSE one."""
    if response.headers["content-type"].startswith("application/json"):
        return cast(dict[str, Any], orjson.loads(response.content))
    data = [line[5:].strip() for line in response.text.splitlines() if line.startswith("data:")]
    return cast(dict[str, Any], orjson.loads(data[-1]))


def test_session_era_2025_06_18_handshake_and_calls(gateway, granted, backend, devtools):
    init = _post(
        gateway,
        backend.secret,
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {
                "protocolVersion": "2025-06-18",
                "capabilities": {},
                "clientInfo": {"name": "old-client", "version": "1.0"},
            },
        },
    )
    assert init.status_code == 200
    assert _sse_result(init)["result"]["protocolVersion"] == "2025-06-18"
    session = init.headers["mcp-session-id"]
    assert session and init.headers["x-gateway-request-id"].startswith("gwreq_")
    headers = {"Mcp-Session-Id": session, "MCP-Protocol-Version": "2025-06-18"}
    done = _post(
        gateway,
        backend.secret,
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        **headers,
    )
    assert done.status_code == 202
    listed = _post(
        gateway, backend.secret, {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}, **headers
    )
    names = [tool["name"] for tool in _sse_result(listed)["result"]["tools"]]
    assert "devtools__echo" in names and "finance__pay" not in names
    called = _post(
        gateway,
        backend.secret,
        {
            "jsonrpc": "2.0",
            "id": 3,
            "method": "tools/call",
            "params": {"name": "devtools__echo", "arguments": {"text": "old"}},
        },
        **headers,
    )
    assert _sse_result(called)["result"]["content"][0]["text"] == "old"


def test_missing_or_bad_key_is_refused_with_401_in_json_rpc_form(gateway, world):
    for secret in ("", "sk-gw-not-a-real-key-0000000000000000"):
        response = _post(gateway, secret, {"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
        assert response.status_code == 401
        assert response.headers["www-authenticate"].startswith("Bearer")
        body = response.json()
        assert body["jsonrpc"] == "2.0" and body["error"]["code"] == -32001


def test_x_api_key_authenticates_too(gateway, granted, backend):
    response = httpx.post(
        gateway.base_url + "/mcp",
        json={
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {
                "protocolVersion": "2025-11-25",
                "capabilities": {},
                "clientInfo": {"name": "c", "version": "1"},
            },
        },
        headers={"x-api-key": backend.secret, "Accept": "application/json, text/event-stream"},
    )
    assert response.status_code == 200 and response.headers["mcp-session-id"]


def test_another_keys_session_is_not_found(gateway, granted, backend):
    init = _post(
        gateway,
        backend.secret,
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {
                "protocolVersion": "2025-11-25",
                "capabilities": {},
                "clientInfo": {"name": "c", "version": "1"},
            },
        },
    )
    other = keys.create_key(actor=ACTOR, organization=backend.organization, name="vk-other")
    stolen = _post(
        gateway,
        other.secret,
        {"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
        **{"Mcp-Session-Id": init.headers["mcp-session-id"], "MCP-Protocol-Version": "2025-11-25"},
    )
    assert stolen.status_code == 404


async def test_revoked_grant_takes_effect_and_is_announced(gateway, granted, backend, devtools):
    changed = asyncio.Event()

    async def on_message(message: object) -> None:
        if isinstance(message, types.ToolListChangedNotification):
            changed.set()

    async with connect(gateway, backend.secret, message_handler=on_message) as client:
        assert "devtools__echo" in await tool_names(client)
        await in_db(granted.grant, backend.key_id, grant("devtools", "add"))
        await asyncio.wait_for(changed.wait(), 10)
        assert await tool_names(client) == ["devtools__add"]
        with pytest.raises(MCPError, match="Unknown tool"):
            await client.call_tool("devtools__echo", {"text": "late"})
    assert ("echo", {"text": "late"}) not in devtools.calls


async def test_revoked_grant_is_announced_on_a_2026_listen_stream(gateway, granted, backend):
    async with connect(gateway, backend.secret, mode="auto") as client:
        assert "devtools__echo" in await tool_names(client)
        async with client.listen(tools_list_changed=True) as subscription:
            await in_db(granted.grant, backend.key_id, grant("devtools", "add"))
            event = await asyncio.wait_for(anext(subscription), 10)
        assert type(event).__name__ == "ToolsListChanged"
        assert await tool_names(client) == ["devtools__add"]


async def test_upstream_list_change_reaches_the_client(gateway, world, backend, devtools):
    world.add_server(http_config("devtools", devtools))
    world.grant(backend.key_id, grant("devtools", "*"))
    changed = asyncio.Event()

    async def on_message(message: object) -> None:
        if isinstance(message, types.ToolListChangedNotification):
            changed.set()

    async with connect(gateway, backend.secret, message_handler=on_message) as client:
        assert "devtools__fresh" not in await tool_names(client)
        assert text_of(await client.call_tool("devtools__grow", {})) == "grown"
        await asyncio.wait_for(changed.wait(), 10)
        assert "devtools__fresh" in await tool_names(client)
        assert text_of(await client.call_tool("devtools__fresh", {})) == "fresh"


async def test_rate_limit_applies_to_tool_calls(gateway, granted, backend, devtools):
    await in_db(
        common.save_instance,
        RateLimit(virtual_key_id=backend.key_id, requests_per_minute=2),
        actor=ACTOR,
    )
    within_one_window()
    async with connect(gateway, backend.secret) as client:
        first = await client.call_tool("devtools__echo", {"text": "1"})
        second = await client.call_tool("devtools__echo", {"text": "2"})
        third = await client.call_tool("devtools__echo", {"text": "3"})
    assert not first.is_error and not second.is_error
    assert third.is_error and "Rate limit reached" in text_of(third)
    assert [call for call in devtools.calls if call[0] == "echo"] == [
        ("echo", {"text": "1"}),
        ("echo", {"text": "2"}),
    ]
    rows = await in_db(ledger_rows, 3)
    assert sorted(row.status for row in rows if row.route == "mcp.tool") == [200, 200, 429]


async def test_tool_call_leaves_a_ledger_row_with_its_price(
    gateway, world: World, backend: Team_, devtools: RecordingServer
):
    world.add_server(
        http_config(
            "devtools",
            devtools,
            price=ToolPrice(per_call_micros=1000),
            tool_prices=(("blob", ToolPrice(per_call_micros=500, per_kb_micros=100)),),
        )
    )
    world.grant(backend.key_id, grant("devtools", "*"))
    async with connect(gateway, backend.secret) as client:
        result = await client.call_tool("devtools__blob", {"size": 3000})
    assert not result.is_error
    [row] = await in_db(ledger_rows, 1)
    assert row.route == "mcp.tool" and row.provider == "mcp:devtools" and row.status == 200
    assert row.key_id == backend.key_id and row.team_id == backend.team.pk
    assert row.client_name == "mcp"  # the SDK client's own name, from initialize
    kilobytes = -(-len(result.model_dump_json(by_alias=True, exclude_none=True)) // 1024)
    assert row.cost_micros == 500 + 100 * kilobytes


async def test_tool_prices_count_against_the_keys_budget(
    gateway, world: World, backend: Team_, devtools: RecordingServer
):
    world.add_server(http_config("devtools", devtools, price=ToolPrice(per_call_micros=400_000)))
    world.grant(backend.key_id, grant("devtools", "*"))
    key = await in_db(VirtualKey.objects.get, pk=backend.key_id)
    await in_db(factories.budget, owner=key, amount_micros=1_000_000)
    async with connect(gateway, backend.secret) as client:
        results = [await client.call_tool("devtools__echo", {"text": str(i)}) for i in range(3)]
    assert [r.is_error for r in results] == [False, False, True]
    assert "Budget exhausted" in text_of(results[2])
    assert len([c for c in devtools.calls if c[0] == "echo"]) == 2
    rows = await in_db(ledger_rows, 3)
    assert sorted((r.status, r.cost_micros) for r in rows) == [
        (200, 400_000),
        (200, 400_000),
        (402, 0),
    ]


async def test_cancelled_call_is_cancelled_upstream_and_recorded(
    gateway, granted, backend, devtools
):
    async with connect(gateway, backend.secret) as client:
        call = asyncio.create_task(client.call_tool("devtools__sleepy", {"seconds": 30}))
        await asyncio.to_thread(wait_for, lambda: ("sleepy", {"seconds": 30}) in devtools.calls)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        await asyncio.to_thread(wait_for, lambda: ("sleepy-cancelled", {}) in devtools.calls)
    [row] = await in_db(ledger_rows, 1)
    assert (row.status, row.client_disconnected, row.tool_name) == (499, True, "sleepy")


def test_2026_request_whose_headers_do_not_mirror_its_body_is_refused(gateway, granted, backend):
    meta = {
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {},
    }
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"_meta": meta}}
    good = _post(
        gateway,
        backend.secret,
        body,
        **{"MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "tools/list"},
    )
    assert good.status_code == 200
    assert "devtools__echo" in [t["name"] for t in _sse_result(good)["result"]["tools"]]
    assert _sse_result(good)["result"]["cacheScope"] == "private"
    mismatched = _post(
        gateway,
        backend.secret,
        body,
        **{"MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "tools/call"},
    )
    assert mismatched.status_code == 400 and mismatched.json()["error"]["code"] == -32020
    future = {"io.modelcontextprotocol/protocolVersion": "2099-01-01"}
    unsupported = _post(
        gateway,
        backend.secret,
        {**body, "params": {"_meta": {**meta, **future}}},
        **{"MCP-Protocol-Version": "2099-01-01", "Mcp-Method": "tools/list"},
    )
    assert unsupported.status_code == 400 and unsupported.json()["error"]["code"] == -32022


async def test_progress_of_an_upstream_tool_reaches_the_client(gateway, granted, backend):
    seen: list[float] = []

    async def progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append(progress)

    async with connect(gateway, backend.secret) as client:
        result = await client.call_tool(
            "devtools__countdown", {"steps": 3}, progress_callback=progress
        )
    assert text_of(result) == "done"
    assert seen == [1, 2, 3]


async def test_restarted_session_era_server_gets_a_new_session_for_the_same_call(
    gateway, world, backend
):
    """The upstream forgot the gateway's session (restart): it answers 404, which means the
    call never ran, so the gateway opens a new session and sends the call again."""
    first = legacy_server().start()
    world.add_server(http_config("legacy", first))
    world.grant(backend.key_id, grant("legacy", "echo"))
    try:
        async with connect(gateway, backend.secret) as client:
            assert text_of(await client.call_tool("legacy__echo", {"text": "one"})) == "one"
            await asyncio.to_thread(first.stop)
            second = await asyncio.to_thread(lambda: legacy_server(first.port).start())
            try:
                assert text_of(await client.call_tool("legacy__echo", {"text": "two"})) == "two"
            finally:
                await asyncio.to_thread(second.stop)
    finally:
        first.stop()
    assert any(h.get("mcp-session-id") for h in first.requests)  # a session-era upstream
    assert second.calls == [("echo", {"text": "two"})]
    connection = gateway.runtime.mcp.upstreams.connection("legacy")
    assert connection is not None and connection.connections == 2


async def test_stdio_server_is_launched_with_its_environment(gateway, world, backend):
    world.add_server(stdio_config("local", env={"TOOL_SUFFIX": "!"}))
    world.grant(backend.key_id, grant("local", "shout", "pid"))
    async with connect(gateway, backend.secret) as client:
        assert sorted(await tool_names(client)) == ["local__pid", "local__shout"]
        assert text_of(await client.call_tool("local__shout", {"text": "hey"})) == "HEY!"


async def test_crashed_stdio_server_is_restarted(gateway, world, backend):
    world.add_server(stdio_config("local"))
    world.grant(backend.key_id, grant("local", "*"))
    async with connect(gateway, backend.secret) as client:
        before = text_of(await client.call_tool("local__pid", {}))
        crashed = await client.call_tool("local__crash", {})
        assert crashed.is_error
        after = text_of(await client.call_tool("local__pid", {}))
    assert after.isdigit() and after != before
    connection = gateway.runtime.mcp.upstreams.connection("local")
    assert connection is not None and connection.connections == 2


def test_tools_are_paged_with_the_gateways_own_cursor(gateway, granted, backend):
    gateway.runtime.mcp.page_size = 1

    async def scenario() -> list[str]:
        async with connect(gateway, backend.secret) as client:
            first = await client.list_tools()
            assert len(first.tools) == 1 and first.next_cursor
            with pytest.raises(MCPError) as bad:
                await client.list_tools(cursor="not-a-cursor")
            assert bad.value.code == types.INVALID_PARAMS
            return await tool_names(client)

    names = asyncio.run(scenario())
    assert sorted(names) == [
        "devtools__add",
        "devtools__blob",
        "devtools__countdown",
        "devtools__echo",
        "devtools__sleepy",
    ]


def test_runtime_shutdown_stops_stdio_servers(world, backend, settings, tmp_path):
    from tests.proxy.conftest import start_gateway

    settings.GATEWAY_POLICY_CHECK_SECONDS = 0
    settings.GATEWAY_SPOOL_DIR = str(tmp_path / "spool")
    server = start_gateway()
    world.add_server(stdio_config("local"))
    world.grant(backend.key_id, grant("local", "*"))

    async def pid() -> int:
        async with connect(server, backend.secret) as client:
            return int(text_of(await client.call_tool("local__pid", {})))

    process = asyncio.run(pid())
    server.stop()

    def gone() -> bool:
        try:
            os.kill(process, 0)
        except ProcessLookupError:
            return True
        return False

    wait_for(gone, 10)


async def test_saved_stdio_server_is_not_launched_when_stdio_is_turned_off(
    gateway, world, backend, settings, caplog
):
    settings.GATEWAY_MCP_STDIO = False
    world.add_server(stdio_config("local"))
    world.grant(backend.key_id, grant("local", "*"))
    async with connect(gateway, backend.secret) as client:
        assert await tool_names(client) == []
    assert "GATEWAY_MCP_STDIO=false" in caplog.text
    connection = gateway.runtime.mcp.upstreams.connection("local")
    assert connection is None or connection.connections == 0
