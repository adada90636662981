"""MCP grants filter the tool definitions Claude Code sends in /v1/messages (issue 8 item 2)."""

from __future__ import annotations

import httpx
import pytest

from governance.models import MCPServer, MCPToolGrant
from governance.services import mcp
from tests.proxy.conftest import ACTOR, GatewayServer, Governed

pytestmark = pytest.mark.django_db(transaction=True)


def tool(name: str) -> dict[str, object]:
    return {"name": name, "description": f"{name} tool", "input_schema": {"type": "object"}}


def post(gateway: GatewayServer, secret: str, body: dict[str, object]) -> httpx.Response:
    return httpx.post(
        gateway.anthropic_url + "/v1/messages", json=body, headers={"x-api-key": secret}, timeout=10
    )


def register(name: str) -> MCPServer:
    server = MCPServer(name=name, transport="http", url="http://127.0.0.1:9/mcp")
    mcp.save_server(actor=ACTOR, server=server)
    return server


def test_tools_of_ungranted_servers_and_tools_never_reach_the_model(
    gateway, governed: Governed, fake_upstream
):
    github, finance = register("github"), register("finance")
    mcp.save_grant(
        actor=ACTOR,
        grant=MCPToolGrant(server=github, team=governed.team, tool_patterns=["search_*", "get_*"]),
    )
    del finance  # registered, so governed, but granted to nobody
    body = {
        "model": "claude-sonnet-4-6",
        "max_tokens": 10,
        "messages": [{"role": "user", "content": "hi"}],
        "tools": [
            tool("Bash"),
            tool("mcp__github__search_code"),
            tool("mcp__github__delete_repo"),
            tool("mcp__finance__pay_invoice"),
            tool("mcp__gateway__github__get_issue"),  # through the gateway's own /mcp
            tool("mcp__playwright__click"),  # a server the gateway does not know: left alone
        ],
        "tool_choice": {"type": "tool", "name": "mcp__finance__pay_invoice"},
    }

    assert post(gateway, governed.secret, body).status_code == 200

    sent = fake_upstream.received[0].json
    assert [t["name"] for t in sent["tools"]] == [
        "Bash",
        "mcp__github__search_code",
        "mcp__gateway__github__get_issue",
        "mcp__playwright__click",
    ]
    assert "tool_choice" not in sent  # it named a removed tool


def test_a_request_without_mcp_tools_is_forwarded_byte_for_byte(
    gateway, governed: Governed, fake_upstream
):
    register("github")
    raw = (
        b'{"model":"claude-sonnet-4-6","max_tokens":10,"messages":[{"role":"user",'
        b'"content":"hi"}],"tools":[{"name":"Bash","input_schema":{"type":"object"}}]}'
    )

    response = httpx.post(
        gateway.anthropic_url + "/v1/messages",
        content=raw,
        headers={"x-api-key": governed.secret, "content-type": "application/json"},
        timeout=10,
    )

    assert response.status_code == 200
    assert fake_upstream.received[0].body == raw
