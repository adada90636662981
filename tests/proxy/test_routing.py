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
    assert TABLE.public_names() == ["claude-opus-4-7"]
