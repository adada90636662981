"""The admin for MCP servers (write-only credentials, tool prices), grants, and the key page's
"MCP tools this key can see" preview."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from governance import crypto, policy
from governance.models import MCPServer, MCPToolGrant, MCPToolPrice, VirtualKey
from governance.services import common, keys, mcp
from tests import factories
from tests.governance.test_admin import admin_url, form_data

pytestmark = pytest.mark.django_db
ACTOR = factories.TEST_ACTOR
TOKEN = "ghp_admin-secret-0123456789"
INLINES = {
    "tool_prices-TOTAL_FORMS": "0",
    "tool_prices-INITIAL_FORMS": "0",
    "grants-TOTAL_FORMS": "0",
    "grants-INITIAL_FORMS": "0",
}


def new_server(client: Client, **fields: str) -> Any:
    data = {
        "name": "github",
        "transport": "http",
        "url": "http://127.0.0.1:9/mcp",
        "args": "[]",
        "env": "{}",
        "timeout_seconds": "60",
        "price_per_call_usd": "0.001",
        "price_per_kb_usd": "0",
        "enabled": "on",
        **INLINES,
        **fields,
    }
    return client.post(admin_url(MCPServer, "add"), data)


def test_headers_are_stored_encrypted_and_never_shown_again(admin_client: Client) -> None:
    response = new_server(admin_client, new_headers=f"Authorization: Bearer {TOKEN}")
    assert response.status_code == 302, response.content.decode()[:2000]

    server = MCPServer.objects.get(name="github")
    assert server.price_per_call_micros == 1_000
    assert crypto.decrypt_credentials(server.credentials_encrypted) == {
        "header:Authorization": f"Bearer {TOKEN}"
    }
    page = admin_client.get(admin_url(MCPServer, "change", server.pk)).content.decode()
    assert TOKEN not in page and server.credentials_encrypted not in page
    assert "header Authorization" in page


def test_a_credentials_line_without_a_separator_is_refused_without_echoing_it(
    admin_client: Client,
) -> None:
    response = new_server(admin_client, new_headers=f"Bearer {TOKEN}")

    assert response.status_code == 200
    page = response.content.decode()
    assert "line 1: write NAME: value" in page and TOKEN not in page
    assert not MCPServer.objects.exists()


def test_moving_a_server_needs_its_credentials_re_entered_or_forgotten(
    admin_client: Client,
) -> None:
    new_server(admin_client, new_headers=f"Authorization: {TOKEN}")
    server = MCPServer.objects.get(name="github")
    url = admin_url(MCPServer, "change", server.pk)
    page = admin_client.get(url).content.decode()

    moved = admin_client.post(url, form_data(page, url="http://127.0.0.2:9/mcp"))
    assert moved.status_code == 200 and "re-enter the credentials" in moved.content.decode()

    forgotten = form_data(
        page, url="http://127.0.0.2:9/mcp", forget_credentials="header:Authorization"
    )
    assert admin_client.post(url, forgotten).status_code == 302
    server.refresh_from_db()
    assert server.url == "http://127.0.0.2:9/mcp" and not server.credentials_encrypted


def test_a_stdio_server_with_secret_variables_and_tool_prices(admin_client: Client) -> None:
    response = new_server(
        admin_client,
        name="everything",
        transport="stdio",
        url="",
        command="npx",
        args='["-y", "@modelcontextprotocol/server-everything"]',
        env='{"LOG_LEVEL": "info"}',
        new_secret_env=f"API_TOKEN={TOKEN}",
        **{
            "tool_prices-TOTAL_FORMS": "1",
            "tool_prices-0-tool_pattern": "echo",
            "tool_prices-0-per_call_usd": "0.5",
            "tool_prices-0-per_kb_usd": "0",
            "tool_prices-0-position": "0",
        },
    )
    assert response.status_code == 302, response.content.decode()[:3000]

    server = MCPServer.objects.get(name="everything")
    assert server.destination == ("npx", "-y", "@modelcontextprotocol/server-everything")
    assert mcp.credential_names(server) == ["env:API_TOKEN"]
    price = MCPToolPrice.objects.get(server=server)
    assert (price.tool_pattern, price.per_call_micros) == ("echo", 500_000)


def test_a_grant_to_a_project_with_a_deny_list(admin_client: Client) -> None:
    server = MCPServer(name="github", url="http://127.0.0.1:9/mcp")
    common.save_instance(server, actor=ACTOR)
    project = factories.project(name="payments")

    response = admin_client.post(
        admin_url(MCPToolGrant, "add"),
        {
            "server": server.pk,
            "project": project.pk,
            "tool_patterns": "search_*, get_*",
            "denied_patterns": "get_secret",
        },
    )

    assert response.status_code == 302, response.content.decode()[:3000]
    grant = MCPToolGrant.objects.get(server=server)
    assert (grant.level, grant.tool_patterns, grant.denied_patterns) == (
        "project",
        ["search_*", "get_*"],
        ["get_secret"],
    )
    listing = admin_client.get(admin_url(MCPToolGrant, "changelist")).content.decode()
    assert f"project {project}" in listing


def test_the_key_page_previews_the_tools_the_key_can_see(admin_client: Client) -> None:
    team = factories.team(name="backend")
    key = factories.virtual_key(team=team, name="vk-backend")
    github = MCPServer(name="github", url="http://127.0.0.1:9/mcp", code_mode=True)
    common.save_instance(github, actor=ACTOR)
    for owner, tools in (({"team": team}, ["search_*", "get_*"]), ({"virtual_key": key}, ["*"])):
        grant = MCPToolGrant(server=github, tool_patterns=tools, denied_patterns=["get_x"], **owner)
        mcp.save_grant(actor=ACTOR, grant=grant)
    url = admin_url(VirtualKey, "change", key.pk)

    unknown = admin_client.get(url).content.decode()
    assert "MCP tools this key can see" in unknown
    assert "github</strong> (Code Mode): tool list not seen yet" in unknown
    assert "search_*, get_* except get_x (team backend)" in unknown

    policy.remember_mcp_tools("github", ["search_code", "get_x", "get_issue", "delete_repo"])
    known = admin_client.get(url).content.decode()
    assert "2 of 4 tools: get_issue, search_code" in known

    keys.revoke_key(actor=ACTOR, key=key)
    revoked = admin_client.get(url).content.decode()
    assert "None: the key (or its parent key) is revoked." in revoked


def test_the_key_page_changes_the_keys_code_mode(admin_client: Client) -> None:
    key = factories.virtual_key(name="vk-solo")
    url = admin_url(VirtualKey, "change", key.pk)
    page = admin_client.get(url).content.decode()
    assert "None: no grant of its organization, team, project or key." in page

    response = admin_client.post(url, form_data(page, mcp_code_mode="off"))

    assert response.status_code == 302, response.content.decode()[:3000]
    key.refresh_from_db()
    assert key.mcp_code_mode == "off"
