"""MCP servers, tool prices and grants: models, services, snapshots and roles (database)."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.exceptions import ValidationError
from pytest_django import DjangoCaptureOnCommitCallbacks

from governance import crypto, policy
from governance.access import Access
from governance.models import (
    AuditEvent,
    MCPServer,
    MCPToolGrant,
    MCPToolPrice,
    Membership,
    Role,
    VirtualKey,
)
from governance.policy import ToolPrice
from governance.services import common, keys, mcp
from tests import factories

pytestmark = pytest.mark.django_db
ACTOR = factories.TEST_ACTOR
TOKEN = "ghp_test-upstream-token-0123456789"


def http_server(name: str = "github", **fields: Any) -> MCPServer:
    server = MCPServer(name=name, url=f"http://127.0.0.1:9/{name}/mcp", **fields)
    common.save_instance(server, actor=ACTOR)
    return server


def stdio_server(name: str = "everything", **fields: Any) -> MCPServer:
    server = MCPServer(
        name=name,
        transport=MCPServer.Transport.STDIO,
        command="npx",
        args=["-y", "@modelcontextprotocol/server-everything"],
        **fields,
    )
    common.save_instance(server, actor=ACTOR)
    return server


def grant(server: MCPServer, tools: list[str], deny: list[str] | None = None, **owner: Any) -> Any:
    obj = MCPToolGrant(server=server, tool_patterns=tools, denied_patterns=deny or [], **owner)
    mcp.save_grant(actor=ACTOR, grant=obj)
    return obj


@pytest.fixture
def chain() -> dict[str, Any]:
    org = factories.organization(name="acme")
    team = factories.team(organization=org, name="backend")
    project = factories.project(organization=org, name="payments")
    issued = keys.create_key(
        actor=ACTOR, organization=org, name="vk-backend", team=team, project=project
    )
    sub = factories.virtual_key(parent=issued.key, name="alice")
    return {"org": org, "team": team, "project": project, "key": issued.key, "sub": sub}


# --- models -----------------------------------------------------------------------------------


def test_an_http_server_needs_a_url_and_a_stdio_server_a_command() -> None:
    with pytest.raises(ValidationError) as http:
        MCPServer(name="a").full_clean()
    with pytest.raises(ValidationError) as stdio:
        MCPServer(name="b", transport=MCPServer.Transport.STDIO).full_clean()

    assert "url" in http.value.message_dict
    assert "command" in stdio.value.message_dict


def test_an_http_server_url_must_not_reach_the_gateways_own_network() -> None:
    server = MCPServer(name="meta", url="http://169.254.169.254/latest/meta-data")

    with pytest.raises(ValidationError) as refused:
        server.full_clean()

    assert "non-public address" in refused.value.message_dict["url"][0]


def test_a_server_name_with_the_namespace_separator_is_refused() -> None:
    with pytest.raises(ValidationError) as refused:
        MCPServer(name="git__hub", url="http://127.0.0.1:9/mcp").full_clean()

    assert "name" in refused.value.message_dict


def test_a_grant_has_exactly_one_owner(chain: dict[str, Any]) -> None:
    server = http_server()
    for owners in ({}, {"team": chain["team"], "project": chain["project"]}):
        with pytest.raises(ValidationError, match="exactly one"):
            MCPToolGrant(server=server, tool_patterns=["*"], **owners).full_clean()


# --- credentials ------------------------------------------------------------------------------


def test_credentials_are_stored_encrypted_and_audited_by_name_only() -> None:
    server = MCPServer(name="github", url="http://127.0.0.1:9/mcp")
    credentials = mcp.checked_credentials(headers={"Authorization": f"Bearer {TOKEN}"})

    mcp.save_server(actor=ACTOR, server=server, updates=credentials)

    stored = MCPServer.objects.get(name="github")
    assert TOKEN not in stored.credentials_encrypted
    assert crypto.decrypt_credentials(stored.credentials_encrypted) == {
        "header:Authorization": f"Bearer {TOKEN}"
    }
    assert mcp.credential_names(stored) == ["header:Authorization"]
    events = AuditEvent.objects.filter(subject_type="governance.MCPServer")
    assert not any(TOKEN in str(e.before) + str(e.after) + e.note for e in events)
    assert any("header:Authorization" in e.note for e in events)


def test_a_reserved_or_malformed_header_name_is_refused() -> None:
    with pytest.raises(ValidationError) as refused:
        mcp.checked_credentials(headers={"Mcp-Session-Id": TOKEN, "bad header": TOKEN})

    assert len(refused.value.messages) == 2
    assert all(TOKEN not in message for message in refused.value.messages)


def test_blank_updates_keep_stored_credentials_and_forget_removes_them() -> None:
    server = MCPServer(name="github", url="http://127.0.0.1:9/mcp")
    mcp.save_server(
        actor=ACTOR, server=server, updates={"header:Authorization": "a", "header:X-Org": "b"}
    )

    server.code_mode = True
    mcp.save_server(actor=ACTOR, server=server, updates={"header:Authorization": ""})
    assert mcp.credential_names(server) == ["header:Authorization", "header:X-Org"]

    mcp.save_server(actor=ACTOR, server=server, remove=["header:X-Org"])
    stored = MCPServer.objects.get(pk=server.pk)
    assert stored.code_mode is True
    assert crypto.decrypt_credentials(stored.credentials_encrypted) == {"header:Authorization": "a"}


def test_moving_a_server_with_stored_credentials_needs_them_re_entered() -> None:
    server = MCPServer(name="github", url="http://127.0.0.1:9/mcp")
    mcp.save_server(actor=ACTOR, server=server, updates={"header:Authorization": TOKEN})

    server.url = "http://127.0.0.2:9/mcp"
    with pytest.raises(ValidationError) as refused:
        mcp.save_server(actor=ACTOR, server=server)
    assert "url" in refused.value.message_dict
    assert MCPServer.objects.get(pk=server.pk).url == "http://127.0.0.1:9/mcp"

    mcp.save_server(actor=ACTOR, server=server, updates={"header:Authorization": "new"})
    assert MCPServer.objects.get(pk=server.pk).url == "http://127.0.0.2:9/mcp"


def test_a_stdio_command_change_with_stored_secrets_needs_them_re_entered() -> None:
    server = stdio_server()
    mcp.save_server(actor=ACTOR, server=server, updates={"env:API_TOKEN": TOKEN})

    server.args = ["-y", "some-other-package"]
    with pytest.raises(ValidationError) as refused:
        mcp.save_server(actor=ACTOR, server=server)

    assert "command" in refused.value.message_dict


# --- tool prices ------------------------------------------------------------------------------


def test_tool_prices_become_exactly_the_list_in_its_order() -> None:
    server = http_server()
    spec = mcp.ToolPriceSpec
    first = mcp.set_tool_prices(
        actor=ACTOR, server=server, prices=[spec("search_*", 10), spec("get_*", 0, 5)]
    )
    second = mcp.set_tool_prices(
        actor=ACTOR, server=server, prices=[spec("get_*", 0, 5), spec("list_*", 1)]
    )
    again = mcp.set_tool_prices(
        actor=ACTOR, server=server, prices=[spec("get_*", 0, 5), spec("list_*", 1)]
    )

    assert first == ["+ search_*", "+ get_*"]
    assert second == ["~ get_*", "+ list_*", "- search_*"]
    assert again == []
    rows = MCPToolPrice.objects.filter(server=server).order_by("position")
    assert [(p.tool_pattern, p.position) for p in rows] == [("get_*", 0), ("list_*", 1)]


# --- snapshots --------------------------------------------------------------------------------


def test_the_catalog_holds_enabled_servers_with_prices_and_grouped_credentials() -> None:
    github = MCPServer(
        name="github",
        url="http://127.0.0.1:9/mcp",
        code_mode=True,
        timeout_seconds=30,
        price_per_call_micros=1_000,
        price_per_kb_micros=10,
    )
    mcp.save_server(actor=ACTOR, server=github, updates={"header:Authorization": TOKEN})
    mcp.set_tool_prices(
        actor=ACTOR,
        server=github,
        prices=[mcp.ToolPriceSpec("search_code", 50), mcp.ToolPriceSpec("search_*", 20)],
    )
    everything = stdio_server(env={"LOG_LEVEL": "debug"})
    mcp.save_server(actor=ACTOR, server=everything, updates={"env:API_TOKEN": "t"})
    http_server("off", enabled=False)

    catalog = policy.load_mcp_catalog()

    assert sorted(catalog.servers) == ["everything", "github"]
    gh = catalog.servers["github"]
    assert (gh.transport, gh.url, gh.code_mode, gh.timeout_seconds) == (
        "http",
        "http://127.0.0.1:9/mcp",
        True,
        30.0,
    )
    assert gh.credentials == {"headers": {"Authorization": TOKEN}, "env": {}}
    assert gh.price == ToolPrice(1_000, 10)
    assert gh.price_of("search_code") == ToolPrice(50, 0)
    assert gh.price_of("search_issues") == ToolPrice(20, 0)
    assert TOKEN not in repr(gh)
    ev = catalog.servers["everything"]
    assert ev.command == ("npx", "-y", "@modelcontextprotocol/server-everything")
    assert ev.env == {"LOG_LEVEL": "debug"}
    assert ev.credentials == {"headers": {}, "env": {"API_TOKEN": "t"}}


def test_a_key_policy_carries_the_grants_of_its_whole_chain(chain: dict[str, Any]) -> None:
    github, docs = http_server(), http_server("docs")
    grant(github, ["*"], ["delete_*"], organization=chain["org"])
    grant(github, ["search_*", "get_*"], team=chain["team"])
    grant(github, ["search_*", "get_*", "list_*"], project=chain["project"])
    grant(github, ["search_*", "get_issue"], virtual_key=chain["key"])
    grant(github, ["search_*"], virtual_key=chain["sub"])
    grant(http_server("off", enabled=False), ["*"], team=chain["team"])
    grant(docs, ["*"], team=factories.team(organization=chain["org"]))  # another team's

    sub = policy.load_policy(chain["sub"].lookup_hash)
    parent = policy.load_policy(chain["key"].lookup_hash)

    assert sub is not None and parent is not None
    assert [(g.level, g.owner_name) for g in sub.tool_grants] == [
        ("key", "vk-backend/alice"),
        ("key", "vk-backend"),
        ("team", "backend"),
        ("project", "payments"),
        ("organization", "acme"),
    ]
    assert sub.granted_servers() == {"github"}
    assert sub.allowed_tools("github", ["search_code", "get_issue", "list_repos"]) == [
        "search_code"
    ]
    assert parent.allowed_tools("github", ["search_code", "get_issue", "get_pr"]) == [
        "search_code",
        "get_issue",
    ]
    assert not parent.tool_allowed("github", "delete_search")
    assert not parent.tool_allowed("docs", "search")


def test_a_sub_key_left_at_inherit_takes_its_parents_code_mode(chain: dict[str, Any]) -> None:
    key: VirtualKey = chain["key"]
    key.mcp_code_mode = VirtualKey.McpCodeMode.ON
    common.save_instance(key, actor=ACTOR)

    sub_policy = policy.load_policy(chain["sub"].lookup_hash)
    assert sub_policy is not None and sub_policy.mcp_code_mode == "on"

    sub: VirtualKey = chain["sub"]
    sub.mcp_code_mode = VirtualKey.McpCodeMode.OFF
    common.save_instance(sub, actor=ACTOR)
    sub_policy = policy.load_policy(chain["sub"].lookup_hash)
    assert sub_policy is not None and sub_policy.mcp_code_mode == "off"


def test_revoking_a_grant_invalidates_the_snapshots_after_commit(
    chain: dict[str, Any], django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks
) -> None:
    team_grant = grant(http_server(), ["*"], team=chain["team"])
    before = policy.current_version()

    with django_capture_on_commit_callbacks(execute=True):
        mcp.revoke_grant(actor=ACTOR, grant=team_grant, reason="left the team")

    assert policy.current_version() > before
    key_policy = policy.load_policy(chain["key"].lookup_hash)
    assert key_policy is not None and key_policy.granted_servers() == frozenset()
    event = AuditEvent.objects.filter(subject_type="governance.MCPToolGrant").latest("id")
    assert event.verb == AuditEvent.Verb.DELETED and event.note == "left the team"


def test_the_known_tool_list_round_trips_through_the_shared_cache() -> None:
    assert policy.known_mcp_tools("github") is None

    policy.remember_mcp_tools("github", ["search_issues", "get_issue", "search_issues"])

    assert policy.known_mcp_tools("github") == ("get_issue", "search_issues")


# --- roles ------------------------------------------------------------------------------------


def _user(
    django_user_model: Any, role: Role, organization: Any, teams: tuple[Any, ...] = ()
) -> Any:
    user = django_user_model.objects.create_user(username=f"u-{role}-{organization.pk}")
    membership = Membership.objects.create(user=user, role=role, organization=organization)
    membership.teams.set(teams)
    return user


def test_grants_are_seen_per_organization_and_team(
    chain: dict[str, Any], django_user_model: Any
) -> None:
    server = http_server()
    org_grant = grant(server, ["*"], organization=chain["org"])
    project_grant = grant(server, ["*"], project=chain["project"])
    key_grant = grant(server, ["*"], virtual_key=chain["key"])
    other = factories.organization(name="globex")
    foreign = grant(server, ["*"], organization=other)

    admin = Access.of(_user(django_user_model, Role.PLATFORM_ADMIN, chain["org"]))
    lead = Access.of(_user(django_user_model, Role.TEAM_LEAD, chain["org"], (chain["team"],)))

    seen = set(admin.visible(MCPToolGrant.objects.all()))
    assert seen == {org_grant, project_grant, key_grant}
    assert admin.can_change(project_grant) and not admin.can_change(foreign)
    assert set(lead.visible(MCPToolGrant.objects.all())) == {key_grant}
    assert not lead.can_change(key_grant)
    price = MCPToolPrice(server=server, tool_pattern="*")
    assert not admin.can_change(price)  # servers and their prices: admins everywhere only
    assert foreign not in seen


def test_stdio_servers_cannot_be_saved_when_the_gateway_launches_none(settings: Any) -> None:
    settings.GATEWAY_MCP_STDIO = False

    with pytest.raises(ValidationError) as refused:
        stdio_server()

    assert "GATEWAY_MCP_STDIO=false" in refused.value.message_dict["transport"][0]
    assert not MCPServer.objects.exists()
    http_server()  # HTTP servers are unaffected
