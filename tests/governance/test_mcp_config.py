"""MCP servers, tool prices, grants and a key's Code Mode in the config file."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from governance import config, crypto, policy
from governance.models import AuditEvent, Budget, MCPServer, MCPToolGrant, MCPToolPrice, VirtualKey
from governance.services import mcp

pytestmark = pytest.mark.django_db

TOKEN = "Bearer ghp_config-secret-0123456789"
FILE = """\
organizations:
  - name: acme
    budgets:
      - {amount_usd: 50, period: month, providers: ["mcp:github"]}
    teams:
      - name: backend
        keys:
          - name: vk-backend
            mcp_code_mode: off
            sub_keys: [{name: alice, mcp_code_mode: on}]
    projects:
      - name: payments
mcp_servers:
  - name: github
    url: http://127.0.0.1:9/mcp
    headers: {Authorization: "${GITHUB_AUTH:-}"}
    timeout_seconds: 30
    per_call_usd: 0.001
    per_kb_usd: "0.0001"
    tool_prices:
      - {tool: search_code, per_call_usd: 0.01}
      - {tool: "search_*", per_kb_usd: 0.000002}
  - name: everything
    command: npx
    args: ["-y", "@modelcontextprotocol/server-everything"]
    env: {LOG_LEVEL: info}
    secret_env: {API_TOKEN: "${EVERYTHING_TOKEN:-}"}
    code_mode: true
mcp_grants:
  - {organization: acme, server: github, tools: ["*"], deny: ["delete_*"]}
  - {team: backend, server: github, tools: ["search_*", "get_*"]}
  - {project: payments, server: everything, tools: ["echo"]}
  - {key: vk-backend/alice, server: github, tools: ["search_*"]}
"""


def apply(
    tmp_path: Path, text: str = FILE, *, dry_run: bool = False, **env: str
) -> config.ApplyResult:
    path = tmp_path / "mcp.yaml"
    path.write_text(textwrap.dedent(text))
    return config.apply_file(path, dry_run=dry_run, env=env)


def error_of(tmp_path: Path, text: str) -> str:
    with pytest.raises(config.ConfigError) as refused:
        apply(tmp_path, text)
    return str(refused.value)


def test_servers_prices_grants_and_code_mode_are_applied(tmp_path: Path) -> None:
    result = apply(tmp_path, GITHUB_AUTH=TOKEN, EVERYTHING_TOKEN="t0k3n")

    github = MCPServer.objects.get(name="github")
    assert (github.transport, github.timeout_seconds) == ("http", 30)
    assert (github.price_per_call_micros, github.price_per_kb_micros) == (1_000, 100)
    assert crypto.decrypt_credentials(github.credentials_encrypted) == {
        "header:Authorization": TOKEN
    }
    prices = MCPToolPrice.objects.filter(server=github).order_by("position")
    assert [(p.tool_pattern, p.per_call_micros, p.per_kb_micros) for p in prices] == [
        ("search_code", 10_000, 0),
        ("search_*", 0, 2),
    ]
    everything = MCPServer.objects.get(name="everything")
    assert everything.transport == "stdio" and everything.code_mode
    assert everything.destination == ("npx", "-y", "@modelcontextprotocol/server-everything")
    assert everything.env == {"LOG_LEVEL": "info"}
    assert mcp.credential_names(everything) == ["env:API_TOKEN"]
    grants = {(g.level, str(g.owner), g.server.name) for g in MCPToolGrant.objects.all()}
    assert grants == {
        ("organization", "acme", "github"),
        ("team", "acme/backend", "github"),
        ("project", "acme/payments", "everything"),
        ("key", "vk-backend/alice", "github"),
    }
    assert VirtualKey.objects.get(name="vk-backend").mcp_code_mode == "off"
    assert VirtualKey.objects.get(name="alice").mcp_code_mode == "on"
    assert Budget.objects.get(organization__name="acme").provider_names == ["mcp:github"]
    assert "+ create MCP server github (credentials: header Authorization)" in result.changes
    assert not any(TOKEN in line for line in result.changes)


def test_applying_the_same_file_twice_changes_nothing(tmp_path: Path) -> None:
    apply(tmp_path, GITHUB_AUTH=TOKEN)
    events = AuditEvent.objects.count()

    again = apply(tmp_path, GITHUB_AUTH=TOKEN)

    assert again.changes == [] and AuditEvent.objects.count() == events


def test_a_dry_run_changes_nothing(tmp_path: Path) -> None:
    result = apply(tmp_path, dry_run=True, GITHUB_AUTH=TOKEN)

    assert result.created > 0
    assert not MCPServer.objects.exists() and not MCPToolGrant.objects.exists()


def test_an_unset_secret_keeps_the_stored_one(tmp_path: Path) -> None:
    apply(tmp_path, GITHUB_AUTH=TOKEN)

    result = apply(tmp_path)

    assert result.changes == []
    stored = MCPServer.objects.get(name="github").credentials_encrypted
    assert crypto.decrypt_credentials(stored) == {"header:Authorization": TOKEN}


def test_grants_prices_not_in_the_file_are_deleted_for_listed_owners(tmp_path: Path) -> None:
    apply(tmp_path)
    fewer = FILE.replace("      - {tool: search_code, per_call_usd: 0.01}\n", "").replace(
        '  - {organization: acme, server: github, tools: ["*"], deny: ["delete_*"]}\n', ""
    )

    result = apply(tmp_path, fewer)

    assert "- delete MCP grant organization acme on github" in result.changes
    assert "- delete MCP tool price github: search_code" in result.changes
    assert "~ update MCP tool price github: search_*: position 1 -> 0" in result.changes
    assert not MCPToolGrant.objects.filter(organization__isnull=False).exists()


def test_moving_a_server_with_stored_credentials_and_none_in_the_file_is_refused(
    tmp_path: Path,
) -> None:
    apply(tmp_path, GITHUB_AUTH=TOKEN)
    moved = FILE.replace("http://127.0.0.1:9/mcp", "http://127.0.0.2:9/mcp")

    assert "line 15: mcp_servers[0].url: re-enter the credentials" in error_of(tmp_path, moved)
    apply(tmp_path, moved, GITHUB_AUTH=TOKEN)  # with them re-entered it moves
    assert MCPServer.objects.get(name="github").url == "http://127.0.0.2:9/mcp"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "mcp_servers:\n  - {name: git__hub, url: http://127.0.0.1:9/mcp}\n",
            'line 2: mcp_servers[0].name: must not contain "__"',
        ),
        (
            "mcp_servers:\n  - {name: s, command: npx, url: http://127.0.0.1:9/mcp}\n",
            "line 2: mcp_servers[0]: url: only for HTTP servers",
        ),
        (
            "mcp_servers:\n  - {name: s, transport: stdio}\n",
            "line 2: mcp_servers[0]: a stdio server needs command:",
        ),
        (
            "mcp_servers:\n  - name: s\n    url: http://127.0.0.1:9/mcp\n"
            "    headers: {'bad header': x}\n",
            "line 4: mcp_servers[0].headers.bad header.[key]: must be an HTTP header name",
        ),
        (
            "mcp_servers:\n  - name: s\n    url: http://127.0.0.1:9/mcp\n"
            "    headers: {Mcp-Session-Id: x}\n",
            "line 4: mcp_servers[0].headers.Mcp-Session-Id: Mcp-Session-Id is set by the gateway",
        ),
        (
            "mcp_servers:\n  - name: s\n    url: http://127.0.0.1:9/mcp\n"
            "    per_call_usd: 0.0000001\n",
            "line 4: mcp_servers[0].per_call_usd:",
        ),
        (
            "mcp_servers:\n  - {name: s, url: http://169.254.169.254/mcp}\n",
            "line 2: mcp_servers[0].url: 169.254.169.254 is a loopback, private",
        ),
        (
            "mcp_grants:\n  - {server: github, tools: []}\n",
            "line 2: mcp_grants[0]: name an organization, a team, a project or a key",
        ),
        (
            "mcp_grants:\n  - {team: a, project: b, server: github, tools: []}\n",
            "line 2: mcp_grants[0]: name at most one of team, project or key",
        ),
        (
            "mcp_grants:\n  - {organization: acme, server: nope, tools: ['*']}\n",
            "line 2: mcp_grants[0].server: unknown MCP server 'nope'",
        ),
        (
            "organizations:\n  - name: acme\n    budgets:\n"
            "      - {amount_usd: 5, providers: ['mcp:nope']}\n",
            "line 4: organizations[0].budgets[0].providers[0]: unknown MCP server 'nope'",
        ),
    ],
)
def test_mistakes_name_the_line_and_field_and_change_nothing(
    tmp_path: Path, text: str, message: str
) -> None:
    assert message in error_of(tmp_path, text)
    assert not MCPServer.objects.exists()


def test_the_same_grant_named_two_ways_is_refused(tmp_path: Path) -> None:
    twice = FILE + '  - {organization: acme, team: backend, server: github, tools: ["*"]}\n'

    assert "mcp_grants[4]: this grant appears twice (first at mcp_grants[1])" in error_of(
        tmp_path, twice
    )


def test_a_key_policy_from_the_file_narrows_by_every_level(tmp_path: Path) -> None:
    apply(tmp_path)
    alice = VirtualKey.objects.get(name="alice")

    key_policy = policy.load_policy(alice.lookup_hash)

    assert key_policy is not None and key_policy.mcp_code_mode == "on"
    tools = ["search_code", "get_issue", "delete_search", "list_repos"]
    assert key_policy.allowed_tools("github", tools) == ["search_code"]
