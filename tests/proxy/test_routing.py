"""RoutingTable.targets_for: which deployments serve a requested model, in failover order."""

from __future__ import annotations

from governance.policy import ProviderConfig, RouteTarget, RoutingTable


def target(provider: str, upstream_model: str = "", position: int = 0) -> RouteTarget:
    config = ProviderConfig(name=provider, kind="mock", base_url="", region="", settings={})
    return RouteTarget(provider=config, upstream_model=upstream_model, position=position, weight=1)


def served(table: RoutingTable, model: str) -> list[tuple[str, str]]:
    return [(t.provider.name, t.upstream_model) for t in table.targets_for(model)]


TABLE = RoutingTable(
    routes={
        "claude-*": (target("everything"),),
        "claude-opus-*": (target("opus-primary"), target("opus-backup", position=1)),
        "claude-opus-4-7": (target("pinned", "claude-opus-4-7-20260101"),),
        "claude-haiku-?-5": (target("haiku", "*"),),
    }
)


def test_exact_name_beats_every_pattern() -> None:
    assert served(TABLE, "claude-opus-4-7") == [("pinned", "claude-opus-4-7-20260101")]


def test_longer_pattern_beats_shorter_one() -> None:
    assert served(TABLE, "claude-opus-4-8") == [
        ("opus-primary", "claude-opus-4-8"),
        ("opus-backup", "claude-opus-4-8"),
    ]
    assert served(TABLE, "claude-sonnet-4-6") == [("everything", "claude-sonnet-4-6")]


def test_pattern_wins_regardless_of_insertion_order() -> None:
    reversed_table = RoutingTable(routes=dict(reversed(list(TABLE.routes.items()))))

    assert served(reversed_table, "claude-opus-4-8")[0][0] == "opus-primary"


def test_empty_or_star_upstream_model_passes_the_requested_name_through() -> None:
    assert served(TABLE, "claude-sonnet-5") == [("everything", "claude-sonnet-5")]
    assert served(TABLE, "claude-haiku-4-5") == [("haiku", "claude-haiku-4-5")]


def test_explicit_upstream_model_is_kept() -> None:
    table = RoutingTable(routes={"fast": (target("p", "claude-haiku-4-5"),)})

    assert served(table, "fast") == [("p", "claude-haiku-4-5")]


def test_unrouted_model_has_no_targets() -> None:
    assert served(TABLE, "gpt-5") == []
    assert served(RoutingTable(routes={}), "claude-opus-4-7") == []


def test_patterns_are_case_sensitive_and_whole_name() -> None:
    assert served(TABLE, "Claude-opus-4-8") == []
    assert served(TABLE, "x-claude-opus-4-8") == []


def test_public_names_list_only_exact_routes() -> None:
    assert TABLE.public_names() == ["claude-opus-4-7", "pinned/claude-opus-4-7"]


def config(name: str, kind: str = "mock") -> ProviderConfig:
    return ProviderConfig(name=name, kind=kind, base_url="", region="", settings={})


PINNING = RoutingTable(
    routes={
        "claude-opus-4-6": (
            RouteTarget(config("anthropic-direct", "anthropic"), "claude-opus-4-6", 0, 1),
            RouteTarget(config("bedrock-us", "bedrock"), "us.anthropic.claude-opus-4-6-v1:0", 1, 1),
        ),
        "meta-llama/llama-3": (target("openrouter", "meta-llama/llama-3"),),
    },
    providers={
        "anthropic-direct": config("anthropic-direct", "anthropic"),
        "bedrock-us": config("bedrock-us", "bedrock"),
        "groq": config("groq", "openai"),
        "openrouter": config("openrouter"),
    },
)


def test_a_provider_prefix_pins_the_routes_deployment_on_that_provider() -> None:
    assert served(PINNING, "bedrock-us/claude-opus-4-6") == [
        ("bedrock-us", "us.anthropic.claude-opus-4-6-v1:0")
    ]


def test_a_provider_kind_prefix_pins_the_deployment_of_that_kind() -> None:
    assert served(PINNING, "anthropic/claude-opus-4-6") == [("anthropic-direct", "claude-opus-4-6")]


def test_a_pinned_provider_without_a_deployment_serves_the_model_as_written() -> None:
    assert served(PINNING, "groq/llama-3.3-70b") == [("groq", "llama-3.3-70b")]
    assert served(PINNING, "bedrock/us.anthropic.claude-sonnet-4-6-v1:0") == [
        ("bedrock-us", "us.anthropic.claude-sonnet-4-6-v1:0")
    ]


def test_an_unknown_provider_prefix_has_no_targets() -> None:
    assert served(PINNING, "nobody/claude-opus-4-6") == []


def test_a_route_named_with_a_slash_is_that_route() -> None:
    assert served(PINNING, "meta-llama/llama-3") == [("openrouter", "meta-llama/llama-3")]


def test_public_names_include_provider_pinned_names() -> None:
    assert PINNING.public_names() == [
        "anthropic-direct/claude-opus-4-6",
        "bedrock-us/claude-opus-4-6",
        "claude-opus-4-6",
        "meta-llama/llama-3",
        "openrouter/meta-llama/llama-3",
    ]
