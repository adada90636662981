from __future__ import annotations

from dataclasses import dataclass

import pytest

from governance import policy, snapshots
from governance.models import Deployment, ModelRoute, Provider, Team, VirtualKey
from governance.policy import KeyPolicy, ModelRule
from governance.services import common, providers
from tests import factories

UPSTREAM_SECRET = "upstream-secret-value-0123456789"


@dataclass
class Keys:
    team: Team
    parent: VirtualKey
    sub: VirtualKey


@pytest.fixture
def chain(db: None) -> Keys:
    team = factories.team(name="backend")
    parent = factories.virtual_key(team=team, name="vk")
    return Keys(team, parent, factories.virtual_key(parent=parent, name="alice"))


def snapshot_of(key: VirtualKey) -> KeyPolicy:
    snapshot = policy.load_policy(key.lookup_hash)
    assert snapshot is not None
    return snapshot


def rules(*rules: ModelRule) -> KeyPolicy:
    """A snapshot with only model rules, for the pure decision logic."""
    return KeyPolicy(
        key_id=1,
        key_name="k",
        prefix="sk-gw-xxxxxx",
        organization_id=1,
        organization_name="acme",
        timezone="UTC",
        fail_open=False,
        model_rules=rules,
    )


# --- model decisions --------------------------------------------------------------------------


def test_no_model_policy_allows_every_model() -> None:
    decision = rules().decide_model("claude-opus-4-6")

    assert decision.allowed
    assert decision.model == "claude-opus-4-6"


@pytest.mark.django_db
def test_team_allow_list_refuses_other_models_and_names_the_team(chain: Keys) -> None:
    factories.model_policy(owner=chain.team, allowed_patterns=["claude-sonnet-*"])

    decision = snapshot_of(chain.sub).decide_model("claude-opus-4-6")

    assert not decision.allowed
    assert decision.refusal == (
        'model "claude-opus-4-6" is not in the allowed list of the team "backend" policy '
        "(claude-sonnet-*)"
    )
    assert snapshot_of(chain.sub).decide_model("claude-sonnet-4-6").allowed


@pytest.mark.django_db
def test_team_deny_refuses_and_names_model_and_team(chain: Keys) -> None:
    factories.model_policy(owner=chain.team, denied_patterns=["claude-opus-*"])

    decision = snapshot_of(chain.parent).decide_model("claude-opus-4-1")

    assert decision.refusal == 'model "claude-opus-4-1" is denied by the team "backend" policy'


@pytest.mark.django_db
def test_key_allow_list_cannot_widen_what_the_team_denies(chain: Keys) -> None:
    factories.model_policy(owner=chain.team, denied_patterns=["claude-opus-*"])
    factories.model_policy(owner=chain.parent, allowed_patterns=["claude-opus-*", "claude-*"])

    decision = snapshot_of(chain.parent).decide_model("claude-opus-4-6")

    assert not decision.allowed
    assert 'team "backend"' in decision.refusal


@pytest.mark.django_db
def test_key_allow_list_cannot_widen_the_teams_allow_list(chain: Keys) -> None:
    factories.model_policy(owner=chain.team, allowed_patterns=["claude-sonnet-*"])
    factories.model_policy(owner=chain.parent, allowed_patterns=["claude-*"])

    decision = snapshot_of(chain.parent).decide_model("claude-opus-4-6")

    assert not decision.allowed
    assert 'team "backend"' in decision.refusal


@pytest.mark.django_db
def test_key_allow_list_narrows_the_team(chain: Keys) -> None:
    factories.model_policy(owner=chain.team, allowed_patterns=["claude-*"])
    factories.model_policy(owner=chain.parent, allowed_patterns=["claude-haiku-*"])
    snapshot = snapshot_of(chain.parent)

    refused = snapshot.decide_model("claude-sonnet-4-6")

    assert 'model "claude-sonnet-4-6"' in refused.refusal
    assert 'key "vk"' in refused.refusal
    assert snapshot.decide_model("claude-haiku-4-5").allowed


@pytest.mark.django_db
def test_parent_key_rules_bind_its_sub_keys(chain: Keys) -> None:
    factories.model_policy(owner=chain.parent, denied_patterns=["claude-opus-*"])
    factories.model_policy(owner=chain.sub, allowed_patterns=["claude-opus-*", "claude-sonnet-*"])

    snapshot = snapshot_of(chain.sub)

    assert [(r.scope, r.owner_name) for r in snapshot.model_rules] == [
        ("key", "alice"),
        ("key", "vk"),
    ]
    assert 'key "vk"' in snapshot.decide_model("claude-opus-4-6").refusal
    assert snapshot.decide_model("claude-sonnet-4-6").allowed
    assert not snapshot.allows_model("claude-opus-4-6")


def test_deny_wins_over_allow_within_one_rule() -> None:
    rule = ModelRule("team", 1, "backend", allowed=("claude-*",), denied=("claude-opus-4-1*",))

    decision = rules(rule).decide_model("claude-opus-4-1-20250805")

    assert "denied" in decision.refusal
    assert rules(rule).decide_model("claude-opus-4-6").allowed


def test_model_rules_are_checked_most_specific_first() -> None:
    key_rule = ModelRule("key", 2, "vk", denied=("claude-opus-*",))
    team_rule = ModelRule("team", 1, "backend", denied=("claude-opus-*",))

    decision = rules(key_rule, team_rule).decide_model("claude-opus-4-6")

    assert 'key "vk"' in decision.refusal


@pytest.mark.django_db
def test_team_override_rewrites_the_model(chain: Keys) -> None:
    factories.model_policy(owner=chain.team, overrides={"claude-opus-*": "claude-sonnet-4-6"})

    decision = snapshot_of(chain.sub).decide_model("claude-opus-4-6")

    assert decision.allowed
    assert decision.model == "claude-sonnet-4-6"
    assert snapshot_of(chain.sub).decide_model("claude-haiku-4-5").model == "claude-haiku-4-5"


@pytest.mark.django_db
def test_most_specific_override_wins(chain: Keys) -> None:
    factories.model_policy(owner=chain.team, overrides={"claude-opus-*": "claude-sonnet-4-6"})
    factories.model_policy(owner=chain.parent, overrides={"claude-opus-*": "claude-haiku-4-5"})

    assert snapshot_of(chain.sub).decide_model("claude-opus-4-6").model == "claude-haiku-4-5"


@pytest.mark.django_db
def test_sub_key_override_beats_parent_override(chain: Keys) -> None:
    factories.model_policy(owner=chain.parent, overrides={"claude-opus-*": "claude-haiku-4-5"})
    factories.model_policy(owner=chain.sub, overrides={"claude-opus-*": "claude-sonnet-4-6"})

    assert snapshot_of(chain.sub).decide_model("claude-opus-4-6").model == "claude-sonnet-4-6"


@pytest.mark.django_db
def test_override_may_redirect_a_denied_model(chain: Keys) -> None:
    factories.model_policy(
        owner=chain.team,
        denied_patterns=["claude-opus-*"],
        overrides={"claude-opus-*": "claude-sonnet-4-6"},
    )

    decision = snapshot_of(chain.sub).decide_model("claude-opus-4-6")

    assert (decision.allowed, decision.model) == (True, "claude-sonnet-4-6")


@pytest.mark.django_db
def test_override_target_is_itself_checked(chain: Keys) -> None:
    factories.model_policy(owner=chain.team, overrides={"claude-opus-*": "claude-sonnet-4-6"})
    factories.model_policy(owner=chain.parent, denied_patterns=["claude-sonnet-*"])

    decision = snapshot_of(chain.sub).decide_model("claude-opus-4-6")

    assert not decision.allowed
    assert decision.model == "claude-sonnet-4-6"
    assert decision.refusal == 'model "claude-sonnet-4-6" is denied by the key "vk" policy'


# --- rate limits ------------------------------------------------------------------------------


@pytest.mark.django_db
def test_rate_limits_of_key_parent_and_team_are_all_present(chain: Keys) -> None:
    factories.rate_limit(owner=chain.team, requests_per_minute=1000)
    factories.rate_limit(owner=chain.parent, tokens_per_minute=400_000)
    factories.rate_limit(owner=chain.sub, concurrent=2)
    factories.rate_limit(owner=factories.team(), requests_per_minute=1)

    limits = snapshot_of(chain.sub).rate_limits

    assert [(r.scope, r.owner_name) for r in limits] == [
        ("key", "alice"),
        ("key", "vk"),
        ("team", "backend"),
    ]
    assert (limits[0].concurrent, limits[0].requests_per_minute) == (2, None)
    assert limits[1].tokens_per_minute == 400_000
    assert limits[2].requests_per_minute == 1000


@pytest.mark.django_db
def test_rate_limit_needs_some_limit(chain: Keys) -> None:
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError, match="at least one"):
        factories.rate_limit(owner=chain.team)


# --- snapshot contents ------------------------------------------------------------------------


@pytest.mark.django_db
def test_snapshot_carries_organization_settings() -> None:
    org = factories.organization(timezone="America/Los_Angeles", admission_fail_mode="open")
    key = factories.virtual_key(organization=org, log_content=True)

    snapshot = snapshot_of(key)

    assert (snapshot.organization_id, snapshot.organization_name) == (org.pk, org.name)
    assert (snapshot.timezone, snapshot.fail_open, snapshot.log_content) == (
        "America/Los_Angeles",
        True,
        True,
    )


# --- routing ----------------------------------------------------------------------------------


def make_provider(name: str, *, enabled: bool = True, secret: str = UPSTREAM_SECRET) -> Provider:
    provider = Provider(
        name=name, kind="anthropic", base_url="https://api.example", enabled=enabled
    )
    common.save_instance(provider, actor=factories.TEST_ACTOR)
    providers.set_credentials(
        actor=factories.TEST_ACTOR, provider=provider, credentials={"api_key": secret}
    )
    return provider


def make_route(public_name: str, *deployments: tuple[Provider, str, int, bool]) -> ModelRoute:
    route = ModelRoute(public_name=public_name)
    common.save_instance(route, actor=factories.TEST_ACTOR)
    for provider, upstream_model, position, enabled in deployments:
        common.save_instance(
            Deployment(
                route=route,
                provider=provider,
                upstream_model=upstream_model,
                position=position,
                enabled=enabled,
            ),
            actor=factories.TEST_ACTOR,
        )
    return route


@pytest.mark.django_db
def test_routing_table_lists_deployments_in_failover_order() -> None:
    primary, backup, spare = make_provider("primary"), make_provider("backup"), make_provider("s")
    make_route(
        "claude-sonnet-4-6",
        (backup, "us.anthropic.claude-sonnet-4-6", 2, True),
        (spare, "claude-sonnet-4-6", 1, False),
        (primary, "claude-sonnet-4-6", 0, True),
    )

    targets = snapshots.build_routing_table().targets_for("claude-sonnet-4-6")

    assert [(t.provider.name, t.upstream_model, t.position) for t in targets] == [
        ("primary", "claude-sonnet-4-6", 0),
        ("backup", "us.anthropic.claude-sonnet-4-6", 2),
    ]
    assert dict(targets[0].provider.credentials) == {"api_key": UPSTREAM_SECRET}


@pytest.mark.django_db
def test_disabled_provider_is_left_out_of_routing() -> None:
    make_route(
        "claude-haiku-4-5",
        (make_provider("off", enabled=False), "claude-haiku-4-5", 0, True),
        (make_provider("on"), "claude-haiku-4-5", 1, True),
    )

    targets = snapshots.build_routing_table().targets_for("claude-haiku-4-5")

    assert [t.provider.name for t in targets] == ["on"]


@pytest.mark.django_db
def test_routing_table_repr_shows_no_credentials() -> None:
    make_route("claude-opus-4-6", (make_provider("direct"), "claude-opus-4-6", 0, True))

    table = snapshots.build_routing_table()

    assert UPSTREAM_SECRET not in repr(table)
    assert UPSTREAM_SECRET not in str(table.targets_for("claude-opus-4-6"))
    assert "direct" in repr(table)


@pytest.mark.django_db
def test_pattern_route_serves_the_requested_name_when_upstream_is_blank() -> None:
    direct = make_provider("direct")
    make_route("claude-*", (direct, "", 0, True))
    make_route("claude-opus-*", (direct, "*", 0, True))
    make_route("claude-opus-4-6", (direct, "claude-opus-4-6-pinned", 0, True))

    table = snapshots.build_routing_table()

    assert table.targets_for("claude-haiku-4-5")[0].upstream_model == "claude-haiku-4-5"
    assert table.targets_for("claude-opus-4-1")[0].upstream_model == "claude-opus-4-1"
    assert table.targets_for("claude-opus-4-6")[0].upstream_model == "claude-opus-4-6-pinned"
    assert table.targets_for("gpt-4o") == ()
    assert table.public_names() == ["claude-opus-4-6", "direct/claude-opus-4-6"]
