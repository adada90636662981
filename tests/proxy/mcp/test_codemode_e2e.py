"""Code Mode through /mcp: meta-tools instead of a server's tools, and programs whose tool calls
take the same governed path as direct calls."""

from __future__ import annotations

import mcp_types as types
import orjson
import pytest
from mcp import Client

from governance.models import RateLimit
from governance.policy import ToolPrice
from governance.services import common
from tests.clock import within_one_window
from tests.proxy.conftest import ACTOR, ledger_rows
from tests.proxy.mcp.conftest import Team_, World, connect, grant, http_config, in_db, tool_names
from tests.proxy.mcp.servers import RecordingServer

pytestmark = pytest.mark.django_db(transaction=True)

META_TOOLS = ["codemode__get_tool", "codemode__run_program", "codemode__search_tools"]


def text_of(result: types.CallToolResult) -> str:
    return "".join(block.text for block in result.content if isinstance(block, types.TextContent))


@pytest.fixture
def coded(world: World, backend: Team_, devtools: RecordingServer, finance: RecordingServer):
    """devtools in Code Mode (echo and add granted), finance served directly."""
    world.add_server(
        http_config("devtools", devtools, code_mode=True, price=ToolPrice(per_call_micros=700))
    )
    world.add_server(http_config("finance", finance))
    world.grant(backend.key_id, grant("devtools", "echo", "add"), grant("finance", "pay"))
    return world


async def run(client: Client, source: str) -> types.CallToolResult:
    return await client.call_tool("codemode__run_program", {"source": source})


async def test_code_mode_server_is_listed_as_meta_tools(gateway, coded, backend):
    async with connect(gateway, backend.secret) as client:
        names = sorted(await tool_names(client))
        found = await client.call_tool("codemode__search_tools", {"query": ""})
    assert names == [*META_TOOLS, "finance__pay"]
    assert "devtools__add" in text_of(found) and "db" not in text_of(found)


async def test_program_calling_two_tools_returns_the_combined_result(
    gateway, coded, backend, devtools
):
    # The SDK's servers wrap a plain return value as structured content {"result": ...}.
    source = (
        "a = devtools__add(a=2, b=3)['result']\n"
        "e = devtools__echo(text='hi')['result']\n"
        "{'sum': a, 'echo': e}"
    )
    async with connect(gateway, backend.secret) as client:
        result = await run(client, source)
    assert not result.is_error, text_of(result)
    assert orjson.loads(text_of(result)) == {"sum": 5, "echo": "hi"}
    assert devtools.calls == [("add", {"a": 2, "b": 3}), ("echo", {"text": "hi"})]
    rows = await in_db(ledger_rows, 2)
    assert [(r.route, r.provider, r.status, r.cost_micros) for r in rows] == [
        ("mcp.tool", "mcp:devtools", 200, 700),
        ("mcp.tool", "mcp:devtools", 200, 700),
    ]


async def test_program_cannot_reach_an_ungranted_tool(gateway, coded, backend, devtools):
    async with connect(gateway, backend.secret) as client:
        result = await run(client, "devtools__blob(size=10)")
    assert result.is_error and "not defined" in text_of(result)
    assert devtools.calls == []


async def test_program_tool_calls_are_rate_limited_like_direct_calls(
    gateway, coded, backend, devtools
):
    await in_db(
        common.save_instance,
        RateLimit(virtual_key_id=backend.key_id, requests_per_minute=2),
        actor=ACTOR,
    )
    source = "[devtools__echo(text=str(i)) for i in range(3)]"
    within_one_window()
    async with connect(gateway, backend.secret) as client:
        result = await run(client, source)
    assert result.is_error and "Rate limit reached" in text_of(result)
    assert len(devtools.calls) == 2


async def test_program_that_imports_is_stopped_and_the_gateway_keeps_serving(
    gateway, coded, backend
):
    async with connect(gateway, backend.secret) as client:
        stopped = await run(client, "import os\nos.listdir('/')")
        assert stopped.is_error and "import is not available" in text_of(stopped)
        still = await run(client, "devtools__echo(text='still here')['result']")
        assert text_of(still) == "still here"


async def test_key_with_code_mode_on_gets_meta_tools_for_every_server(
    gateway, coded: World, backend, finance
):
    await in_db(coded.code_mode.__setitem__, backend.key_id, "on")
    await in_db(
        coded.grant, backend.key_id, grant("devtools", "echo", "add"), grant("finance", "pay")
    )
    async with connect(gateway, backend.secret) as client:
        assert sorted(await tool_names(client)) == META_TOOLS
        result = await run(client, "finance__pay(amount=3)['result']")
    assert text_of(result) == "paid 3"
    assert finance.calls == [("pay", {"amount": 3})]
