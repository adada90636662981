from __future__ import annotations

from dataclasses import dataclass

import pytest
from django.core.exceptions import ValidationError

from governance import policy
from governance.models import Budget, Organization, Project, Team, VirtualKey
from governance.policy import BudgetRule, KeyPolicy
from tests import factories

pytestmark = pytest.mark.django_db

USD = 1_000_000
OPUS = ["claude-opus-*"]


@dataclass
class Tree:
    org: Organization
    team: Team
    project: Project
    parent: VirtualKey
    sub: VirtualKey


@pytest.fixture
def tree() -> Tree:
    org = factories.organization(timezone="Europe/Berlin")
    team = factories.team(organization=org, name="backend")
    project = factories.project(organization=org, name="payments")
    parent = factories.virtual_key(organization=org, team=team, project=project, name="vk")
    sub = factories.virtual_key(parent=parent, name="alice")
    return Tree(org, team, project, parent, sub)


def snapshot_of(key: VirtualKey) -> KeyPolicy:
    snapshot = policy.load_policy(key.lookup_hash)
    assert snapshot is not None
    return snapshot


def owners(rules: tuple[BudgetRule, ...]) -> list[tuple[str, str, int]]:
    return [(r.scope, r.owner_name, r.amount_micros) for r in rules]


def test_sub_key_budget_chain_runs_from_most_to_least_specific(tree: Tree) -> None:
    # Created least specific first, so order in the snapshot is not insertion order.
    factories.budget(owner=tree.org, amount_micros=20_000 * USD)
    factories.budget(owner=tree.project, amount_micros=1_500 * USD, period="quarter")
    factories.budget(owner=tree.team, amount_micros=300 * USD, model_patterns=OPUS)
    factories.budget(owner=tree.team, amount_micros=3_000 * USD)
    factories.budget(owner=tree.parent, amount_micros=500 * USD)
    factories.budget(owner=tree.sub, amount_micros=50 * USD, model_patterns=OPUS)
    factories.budget(owner=tree.sub, amount_micros=200 * USD)

    chain = snapshot_of(tree.sub).budgets

    assert owners(chain) == [
        ("key", "alice", 50 * USD),
        ("key", "alice", 200 * USD),
        ("key", "vk", 500 * USD),
        ("team", "backend", 300 * USD),
        ("team", "backend", 3_000 * USD),
        ("project", "payments", 1_500 * USD),
        ("organization", tree.org.name, 20_000 * USD),
    ]
    assert chain[0].model_patterns == ("claude-opus-*",)
    assert chain[5].period == "quarter"


def test_parent_key_sees_its_own_chain_without_sub_key_budgets(tree: Tree) -> None:
    factories.budget(owner=tree.sub, amount_micros=200 * USD)
    factories.budget(owner=tree.parent, amount_micros=500 * USD)
    factories.budget(owner=tree.team, amount_micros=3_000 * USD)

    assert owners(snapshot_of(tree.parent).budgets) == [
        ("key", "vk", 500 * USD),
        ("team", "backend", 3_000 * USD),
    ]


def test_budgets_of_other_owners_stay_out_of_the_chain(tree: Tree) -> None:
    other_team = factories.team(organization=tree.org)
    other_key = factories.virtual_key(organization=tree.org, team=other_team)
    factories.budget(owner=other_team, amount_micros=1 * USD)
    factories.budget(owner=other_key, amount_micros=2 * USD)
    factories.budget(owner=factories.project(organization=tree.org), amount_micros=3 * USD)
    factories.budget(owner=factories.organization(), amount_micros=4 * USD)
    factories.budget(owner=tree.team, amount_micros=5 * USD)

    assert owners(snapshot_of(tree.sub).budgets) == [("team", "backend", 5 * USD)]


def test_key_without_team_or_project_falls_back_to_the_organization() -> None:
    org = factories.organization()
    key = factories.virtual_key(organization=org)
    factories.budget(owner=org, amount_micros=7 * USD, period="day")

    snapshot = snapshot_of(key)

    assert owners(snapshot.budgets) == [("organization", org.name, 7 * USD)]
    assert (snapshot.team_id, snapshot.project_id) == (None, None)


def test_budget_rule_carries_exhaustion_policy_and_thresholds(tree: Tree) -> None:
    factories.budget(
        owner=tree.team,
        amount_micros=300 * USD,
        model_patterns=OPUS,
        on_exhaust="downgrade",
        downgrade_model="claude-sonnet-4-6",
        alert_thresholds=[75, 90],
    )

    [rule] = snapshot_of(tree.sub).budgets

    assert (rule.on_exhaust, rule.downgrade_model) == ("downgrade", "claude-sonnet-4-6")
    assert rule.alert_thresholds == (75, 90)
    assert rule.label == 'team "backend" month budget (claude-opus-*)'


def test_budgets_for_a_model_keeps_only_matching_tiers(tree: Tree) -> None:
    factories.budget(owner=tree.team, amount_micros=300 * USD, model_patterns=OPUS)
    factories.budget(owner=tree.team, amount_micros=3_000 * USD)
    factories.budget(owner=tree.sub, amount_micros=40 * USD, model_patterns=["claude-haiku-*"])
    snapshot = snapshot_of(tree.sub)

    opus = snapshot.budgets_for(model="claude-opus-4-6")
    sonnet = snapshot.budgets_for(model="claude-sonnet-4-6")
    haiku = snapshot.budgets_for(model="claude-haiku-4-5-20251001")

    assert [r.amount_micros for r in opus] == [300 * USD, 3_000 * USD]
    assert [r.amount_micros for r in sonnet] == [3_000 * USD]
    assert [r.amount_micros for r in haiku] == [40 * USD, 3_000 * USD]


def test_budgets_for_a_provider_keeps_only_that_providers_budgets(tree: Tree) -> None:
    factories.budget(owner=tree.org, amount_micros=9 * USD, provider_names=["bedrock-us"])
    factories.budget(owner=tree.org, amount_micros=99 * USD)
    snapshot = snapshot_of(tree.sub)

    on_bedrock = snapshot.budgets_for(model="claude-sonnet-4-6", provider="bedrock-us")
    direct = snapshot.budgets_for(model="claude-sonnet-4-6", provider="anthropic-direct")
    unknown = snapshot.budgets_for(model="claude-sonnet-4-6")

    assert [r.amount_micros for r in on_bedrock] == [9 * USD, 99 * USD]
    assert [r.amount_micros for r in direct] == [99 * USD]
    assert [r.amount_micros for r in unknown] == [99 * USD]


def test_model_and_provider_filters_must_both_match(tree: Tree) -> None:
    factories.budget(
        owner=tree.team, amount_micros=1 * USD, model_patterns=OPUS, provider_names=["vertex"]
    )
    snapshot = snapshot_of(tree.sub)

    assert snapshot.budgets_for(model="claude-opus-4-6", provider="vertex")
    assert not snapshot.budgets_for(model="claude-opus-4-6", provider="bedrock")
    assert not snapshot.budgets_for(model="claude-sonnet-4-6", provider="vertex")


def test_a_new_budget_reaches_the_snapshot(tree: Tree) -> None:
    assert snapshot_of(tree.sub).budgets == ()

    factories.budget(owner=tree.team, amount_micros=5 * USD)

    assert len(snapshot_of(tree.sub).budgets) == 1


# --- validation -------------------------------------------------------------------------------


def test_downgrade_budget_needs_a_model(tree: Tree) -> None:
    with pytest.raises(ValidationError, match="needs the model"):
        factories.budget(owner=tree.team, amount_micros=1, on_exhaust="downgrade")


def test_only_a_downgrade_budget_names_a_model(tree: Tree) -> None:
    with pytest.raises(ValidationError, match="only a downgrade budget"):
        factories.budget(owner=tree.team, amount_micros=1, downgrade_model="claude-haiku-4-5")


def test_budget_has_at_most_one_owner(tree: Tree) -> None:
    budget = Budget(organization=tree.org, team=tree.team, project=tree.project, amount_micros=1)

    with pytest.raises(ValidationError, match="one team, project or key"):
        budget.full_clean()


def test_budget_owner_must_be_in_the_budgets_organization(tree: Tree) -> None:
    budget = Budget(organization=factories.organization(), team=tree.team, amount_micros=1)

    with pytest.raises(ValidationError, match="another organization"):
        budget.full_clean()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("alert_thresholds", [50, 50]),
        ("alert_thresholds", [0]),
        ("alert_thresholds", [True]),
        ("model_patterns", "claude-opus-*"),
        ("model_patterns", [""]),
        ("period", "fortnight"),
    ],
)
def test_malformed_budget_fields_are_refused(tree: Tree, field: str, value: object) -> None:
    with pytest.raises(ValidationError):
        factories.budget(owner=tree.team, amount_micros=1, **{field: value})

    assert not Budget.objects.filter(team=tree.team).exists()
