"""The spend benchmark's organization tree, seeded through the governance services.

Used by benchmarks/spend_pipeline.py (in its process, after django.setup()). `seed_tree()` is
idempotent: a second run finds the tree by name and returns the same ids, so a ledger generated
by an earlier run (`--reuse`) still points at real organizations, teams, projects and keys.

Three organizations (one in America/New_York, one in Europe/Berlin), 20 teams, 10 projects,
500 keys of which 50 are sub-keys, two providers behind the route `claude-*`, the shipped price
sheet, and 124 budgets: one per organization, an Opus tier budget, one per team and 100 on keys
(daily, weekly and monthly).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import Model

from governance.actors import Actor
from governance.models import (
    Budget,
    Deployment,
    ModelPrice,
    ModelRoute,
    Organization,
    Project,
    Provider,
    Team,
    VirtualKey,
)
from governance.services import common, keys, prices

ACTOR = Actor.system("spend-benchmark")
PREFIX = "bench-"
ROUTE = "claude-*"
ADMIN = "bench-admin"
USD = 1_000_000  # micro-dollars


@dataclass(frozen=True)
class OrgSpec:
    name: str
    timezone: str
    keys: int
    sub_keys: int  # of `keys`, issued under the org's first top-level keys
    teams: int
    projects: int
    provider: str  # where its traffic goes; the other provider takes failovers
    monthly_budget_usd: int


ORGS = (
    OrgSpec("bench-acme", "UTC", 250, 25, 9, 5, "anthropic", 300_000),
    OrgSpec("bench-globex", "America/New_York", 175, 18, 7, 3, "bedrock-us-east-1", 250_000),
    OrgSpec("bench-initech", "Europe/Berlin", 75, 7, 4, 2, "anthropic", 60_000),
)
PROVIDERS = {
    "anthropic": {"kind": Provider.Kind.ANTHROPIC, "base_url": "https://api.anthropic.com"},
    "bedrock-us-east-1": {"kind": Provider.Kind.BEDROCK, "region": "us-east-1"},
}
KEY_BUDGETS = 100  # keys with a budget of their own, spread over the three organizations
TIER_PATTERN = "claude-opus-*"


@dataclass(frozen=True)
class KeyInfo:
    """What a ledger row says about the key that made it."""

    key_id: int
    organization_id: int
    team_id: int | None
    project_id: int | None
    parent_key_id: int | None
    name: str
    provider: str
    alt_provider: str
    timezone: str


@dataclass(frozen=True)
class Tree:
    organizations: dict[str, int]  # name -> id
    timezones: dict[int, str]  # organization id -> time zone
    teams: dict[int, list[int]]  # organization id -> team ids
    keys: list[KeyInfo]
    budgets: int
    admin_username: str


def _save(instance: Model) -> None:
    common.save_instance(instance, actor=ACTOR)


def _providers() -> None:
    for name, fields in PROVIDERS.items():
        if not Provider.objects.filter(name=name).exists():
            _save(Provider(name=name, **fields))
    route = ModelRoute.objects.filter(public_name=ROUTE).first()
    if route is None:
        route = ModelRoute(public_name=ROUTE, description="spend benchmark")
        _save(route)
        for position, name in enumerate(PROVIDERS):
            provider = Provider.objects.get(name=name)
            _save(Deployment(route=route, provider=provider, position=position))


def _organization(spec: OrgSpec) -> Organization:
    org = Organization.objects.filter(name=spec.name).first()
    if org is not None:
        return org
    org = Organization(
        name=spec.name, display_name=spec.name[len(PREFIX) :].title(), timezone=spec.timezone
    )
    _save(org)
    for i in range(spec.teams):
        _save(Team(organization=org, name=f"team-{i + 1:02d}"))
    for i in range(spec.projects):
        _save(Project(organization=org, name=f"project-{i + 1:02d}"))
    _keys(org, spec)
    _org_budgets(org, spec)
    return org


def _keys(org: Organization, spec: OrgSpec) -> None:
    """Top-level keys round-robin over teams (every tenth without a team), half of them on a
    project; sub-keys under the first keys (CI jobs and agents of one developer)."""
    teams = list(org.teams.order_by("name"))
    projects = list(org.projects.order_by("name"))
    parents: list[VirtualKey] = []
    for i in range(spec.keys - spec.sub_keys):
        team = None if i % 10 == 9 else teams[i % len(teams)]
        project = projects[i % len(projects)] if i % 2 == 0 else None
        issued = keys.create_key(
            actor=ACTOR,
            organization=org,
            team=team,
            project=project,
            name=f"dev-{i + 1:03d}",
            owner=f"dev{i + 1:03d}@{spec.name[len(PREFIX) :]}.example",
        )
        parents.append(issued.key)
    for i in range(spec.sub_keys):
        parent = parents[i % max(len(parents) // 4, 1)]
        keys.create_key(actor=ACTOR, organization=org, parent=parent, name=f"agent-{i + 1:03d}")


def _org_budgets(org: Organization, spec: OrgSpec) -> None:
    monthly = Budget.Period.MONTH
    _save(Budget(organization=org, amount_micros=spec.monthly_budget_usd * USD, period=monthly))
    if spec.timezone == "UTC":
        _save(
            Budget(
                organization=org,
                amount_micros=spec.monthly_budget_usd * USD // 3,
                period=monthly,
                model_patterns=[TIER_PATTERN],
            )
        )
    teams = list(org.teams.order_by("name"))
    for i, team in enumerate(teams):
        # Uneven on purpose: some teams run out before the month does, most do not.
        share = spec.monthly_budget_usd * USD // len(teams)
        amount = share * (6 + 3 * (i % 4)) // 10
        _save(Budget(organization=org, team=team, amount_micros=amount, period=monthly))


def _key_budgets() -> None:
    """Daily, weekly and monthly budgets on every fifth key, until KEY_BUDGETS exist."""
    if Budget.objects.filter(virtual_key__isnull=False).exists():
        return
    candidates = VirtualKey.objects.filter(organization__name__startswith=PREFIX).order_by("pk")
    periods = [
        (Budget.Period.DAY, 250 * USD),
        (Budget.Period.WEEK, 1_200 * USD),
        (Budget.Period.MONTH, 4_000 * USD),
    ]
    for i, key in enumerate(candidates[: KEY_BUDGETS * 5 : 5]):
        period, amount = periods[i % len(periods)]
        budget = Budget(
            organization=key.organization, virtual_key=key, amount_micros=amount, period=period
        )
        _save(budget)


def check_empty_or_ours() -> None:
    """Refuse a database that holds organizations this benchmark did not create."""
    foreign = Organization.objects.exclude(name__startswith=PREFIX).values_list("name", flat=True)
    names = list(foreign[:5])
    if names:
        print(
            f"the database holds organizations the benchmark did not create ({', '.join(names)}"
            "...): run it on a database of its own (it rewrites the usage ledger)",
            file=sys.stderr,
        )
        raise SystemExit(2)


def _admin() -> AbstractBaseUser:
    user_model = get_user_model()
    user = user_model.objects.filter(username=ADMIN).first()
    if user is None:
        user = user_model.objects.create_superuser(username=ADMIN, email="", password=None)
    return user


def _key_info(key: VirtualKey, provider_of: dict[int, str]) -> KeyInfo:
    provider = provider_of[key.organization_id]
    return KeyInfo(
        key_id=key.pk,
        organization_id=key.organization_id,
        team_id=key.team_id,
        project_id=key.project_id,
        parent_key_id=key.parent_id,
        name=key.name,
        provider=provider,
        alt_provider=next(name for name in PROVIDERS if name != provider),
        timezone=key.organization.timezone,
    )


def seed_tree() -> Tree:
    """Create what is missing; return the tree's ids (the same on every run)."""
    check_empty_or_ours()
    with transaction.atomic():
        if not ModelPrice.objects.exists():
            prices.load_price_file(path=prices.DEFAULT_PRICE_FILE, actor=ACTOR)
        _providers()
        orgs = {spec.name: _organization(spec) for spec in ORGS}
        _key_budgets()
    _admin()
    provider_of = {orgs[spec.name].pk: spec.provider for spec in ORGS}
    all_keys = (
        VirtualKey.objects.filter(organization__in=orgs.values())
        .select_related("organization")
        .order_by("pk")
    )
    return Tree(
        organizations={name: org.pk for name, org in orgs.items()},
        timezones={org.pk: org.timezone for org in orgs.values()},
        teams={
            org.pk: list(org.teams.order_by("pk").values_list("pk", flat=True))
            for org in orgs.values()
        },
        keys=[_key_info(key, provider_of) for key in all_keys],
        budgets=Budget.objects.filter(organization__in=orgs.values()).count(),
        admin_username=ADMIN,
    )
