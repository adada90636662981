"""KeyPolicy's MCP tool rules (pure: no database): grants by level, deny, Code Mode, prices."""

from __future__ import annotations

import pytest

from governance.policy import KeyPolicy, McpServerConfig, ToolGrantRule, ToolPrice


def key_policy(*grants: ToolGrantRule, code_mode: str = "inherit") -> KeyPolicy:
    return KeyPolicy(
        key_id=10,
        key_name="alice",
        prefix="sk-gw-test",
        organization_id=1,
        organization_name="acme",
        timezone="UTC",
        fail_open=False,
        tool_grants=grants,
        mcp_code_mode=code_mode,
    )


def grant(
    level: str,
    owner: str,
    allowed: tuple[str, ...],
    denied: tuple[str, ...] = (),
    *,
    server: str = "github",
    owner_id: int = 1,
) -> ToolGrantRule:
    return ToolGrantRule(level, owner, server, allowed, denied, owner_id=owner_id)


def test_a_server_without_any_grant_is_refused() -> None:
    policy = key_policy(grant("team", "backend", ("*",), server="docs"))

    assert not policy.tool_allowed("github", "search_issues")
    assert "no grant" in policy.tool_refusal("github", "search_issues")
    assert policy.granted_servers() == {"docs"}


def test_every_level_with_a_grant_for_the_server_must_allow_the_tool() -> None:
    policy = key_policy(
        grant("key", "vk-backend", ("search_*",), owner_id=10),
        grant("team", "backend", ("search_*", "get_*"), owner_id=3),
    )

    assert policy.tool_allowed("github", "search_issues")
    # The team allows get_*, the key does not: a key narrows its team.
    assert policy.tool_refusal("github", "get_issue") == (
        'tool "get_issue" is not granted by the key "vk-backend" grant'
    )


def test_a_key_grant_never_widens_its_team() -> None:
    policy = key_policy(
        grant("key", "vk-backend", ("*",), owner_id=10),
        grant("team", "backend", ("search_*",), owner_id=3),
    )

    assert not policy.tool_allowed("github", "create_pull_request")


def test_a_sub_key_grant_narrows_its_parent_key_and_never_widens_it() -> None:
    # Regression: the key and its parent key are both level "key"; when levels were matched
    # as a whole, either one allowing a tool was enough, so a sub-key's grant widened its
    # parent's.
    policy = key_policy(
        grant("key", "vk-backend/alice", ("search_*", "delete_repo"), owner_id=10),
        grant("key", "vk-backend", ("search_*",), owner_id=9),
    )

    assert policy.tool_allowed("github", "search_code")
    assert policy.tool_refusal("github", "delete_repo") == (
        'tool "delete_repo" is not granted by the key "vk-backend" grant'
    )


def test_a_sub_key_and_its_parent_with_the_same_name_are_still_two_owners() -> None:
    policy = key_policy(
        grant("key", "ops", ("*",), owner_id=10),
        grant("key", "ops", ("get_*",), owner_id=9),
    )

    assert policy.tool_allowed("github", "get_issue")
    assert not policy.tool_allowed("github", "merge_pull_request")


def test_a_deny_at_any_level_wins() -> None:
    policy = key_policy(
        grant("key", "vk-backend", ("*",), owner_id=10),
        grant("organization", "acme", ("*",), ("delete_*",), owner_id=1),
    )

    assert policy.tool_refusal("github", "delete_repo") == (
        'tool "delete_repo" is denied by the organization "acme" grant'
    )
    assert policy.tool_allowed("github", "list_repos")


def test_a_level_without_a_grant_for_the_server_does_not_restrict_it() -> None:
    policy = key_policy(
        grant("team", "backend", ("search",), server="docs", owner_id=3),
        grant("organization", "acme", ("*",), owner_id=1),
    )

    assert policy.tool_allowed("github", "merge_pull_request")
    assert not policy.tool_allowed("docs", "delete_page")


def test_an_empty_allow_list_shuts_the_server_off_for_its_owner() -> None:
    policy = key_policy(
        grant("key", "vk-backend", (), owner_id=10),
        grant("team", "backend", ("*",), owner_id=3),
    )

    assert not policy.tool_allowed("github", "search_issues")


def test_the_refusal_names_the_most_specific_grant_that_refuses() -> None:
    policy = key_policy(
        grant("key", "vk-backend", ("get_*",), owner_id=10),
        grant("project", "payments", ("get_*",), owner_id=5),
        grant("organization", "acme", ("search_*",), owner_id=1),
    )

    for _ in range(3):  # the same answer every time: grants are checked in order
        assert "organization" in policy.tool_refusal("github", "get_issue")
    assert "key" in policy.tool_refusal("github", "search_issues")


def test_allowed_tools_filters_a_server_tool_list() -> None:
    policy = key_policy(grant("team", "backend", ("search_*", "get_*"), ("get_secret",)))

    tools = ["search_issues", "get_issue", "get_secret", "delete_repo"]
    assert policy.allowed_tools("github", tools) == ["search_issues", "get_issue"]


@pytest.mark.parametrize(
    ("key_mode", "server_mode", "expected"),
    [
        ("inherit", True, True),
        ("inherit", False, False),
        ("on", False, True),
        ("off", True, False),
    ],
)
def test_code_mode_follows_the_key_then_the_server(
    key_mode: str, server_mode: bool, expected: bool
) -> None:
    server = McpServerConfig(name="github", transport="http", code_mode=server_mode)

    assert key_policy(code_mode=key_mode).uses_code_mode(server) is expected


@pytest.mark.parametrize(
    ("result_bytes", "cost"),
    [(0, 1_000), (1, 1_100), (1024, 1_100), (1025, 1_200), (10 * 1024, 2_000)],
)
def test_a_tool_price_counts_every_started_kilobyte(result_bytes: int, cost: int) -> None:
    assert ToolPrice(per_call_micros=1_000, per_kb_micros=100).cost_micros(result_bytes) == cost


def test_the_first_matching_tool_price_wins_over_the_server_price() -> None:
    server = McpServerConfig(
        name="github",
        transport="http",
        price=ToolPrice(per_call_micros=1),
        tool_prices=(
            ("search_code", ToolPrice(per_call_micros=50)),
            ("search_*", ToolPrice(per_call_micros=10)),
        ),
    )

    assert server.price_of("search_code").per_call_micros == 50
    assert server.price_of("search_issues").per_call_micros == 10
    assert server.price_of("get_issue").per_call_micros == 1
