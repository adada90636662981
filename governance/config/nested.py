"""Collections owned by one object (budgets, rate limit, model policy): the file is complete.

Whatever the owner has in the database and the file does not list is deleted.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from governance.config.context import Context
from governance.config.errors import Path
from governance.config.schema import BudgetSpec, DowngradeSpec, ModelPolicySpec, RateLimitSpec
from governance.models import (
    Budget,
    ModelPolicy,
    Organization,
    Project,
    RateLimit,
    Team,
    VirtualKey,
)

BudgetIdentity = tuple[str, tuple[str, ...], tuple[str, ...]]


@dataclass(frozen=True, slots=True)
class Owner:
    """An organization, team, project or key, as the owner of nested rows."""

    organization: Organization
    obj: Organization | Team | Project | VirtualKey
    label: str  # "team acme/backend"

    @property
    def field(self) -> str | None:
        """The owner's foreign key on Budget, RateLimit and ModelPolicy (None: the org)."""
        if isinstance(self.obj, Organization):
            return None
        return {Team: "team", Project: "project", VirtualKey: "virtual_key"}[type(self.obj)]

    def owned(self) -> dict[str, Any]:
        return {} if self.field is None else {self.field: self.obj}


def organization_owner(org: Organization) -> Owner:
    return Owner(org, org, f"organization {org.name}")


def team_owner(team: Team) -> Owner:
    return Owner(team.organization, team, f"team {team}")


def project_owner(project: Project) -> Owner:
    return Owner(project.organization, project, f"project {project}")


def key_owner(key: VirtualKey, label: str) -> Owner:
    return Owner(key.organization, key, f"key {label}")


# --- budgets -------------------------------------------------------------------------------


def reconcile_budgets(ctx: Context, specs: list[BudgetSpec], owner: Owner, path: Path) -> None:
    stored: dict[BudgetIdentity, list[Budget]] = defaultdict(list)
    for budget in _stored_budgets(owner):
        stored[_identity(budget)].append(budget)
    for index, spec in enumerate(specs):
        _check_budget_references(ctx, spec, (*path, index))
        matches = stored.get(spec.identity)
        ctx.upsert(
            existing=matches.pop(0) if matches else None,
            new=functools.partial(Budget, organization=owner.organization, **owner.owned()),
            values=_budget_values(spec),
            kind="budget",
            label=_budget_label(owner, spec.period, spec.models, spec.providers),
            path=(*path, index),
        )
    for leftovers in stored.values():
        for budget in leftovers:
            label = _budget_label(
                owner, budget.period, budget.model_patterns, budget.provider_names
            )
            ctx.delete(budget, kind="budget", label=label)


def _stored_budgets(owner: Owner) -> list[Budget]:
    budgets = Budget.objects.filter(organization=owner.organization).order_by("id")
    if owner.field is None:
        budgets = budgets.filter(team__isnull=True, project__isnull=True, virtual_key__isnull=True)
    else:
        budgets = budgets.filter(**owner.owned())
    return list(budgets)


def _identity(budget: Budget) -> BudgetIdentity:
    return (
        budget.period,
        tuple(sorted(budget.model_patterns)),
        tuple(sorted(budget.provider_names)),
    )


def _budget_values(spec: BudgetSpec) -> dict[str, Any]:
    downgrade = spec.on_exhaust if isinstance(spec.on_exhaust, DowngradeSpec) else None
    return {
        "amount_micros": spec.amount_micros,
        "period": spec.period,
        "model_patterns": list(spec.models),
        "provider_names": list(spec.providers),
        "alert_thresholds": list(spec.alerts),
        "on_exhaust": Budget.OnExhaust.DOWNGRADE if downgrade else str(spec.on_exhaust),
        "downgrade_model": downgrade.downgrade_to if downgrade else "",
    }


def _budget_label(owner: Owner, period: str, models: list[str], providers: list[str]) -> str:
    label = f"{owner.label} {period}"
    if models:
        label += f" [{', '.join(models)}]"
    if providers:
        label += f" providers [{', '.join(providers)}]"
    return label


def _check_budget_references(ctx: Context, spec: BudgetSpec, path: Path) -> None:
    for index, name in enumerate(spec.providers):
        if name not in ctx.known_providers:
            # "mcp:<server>" is the provider of an MCP server's tool calls.
            where = "mcp_servers:" if name.startswith("mcp:") else "providers:"
            what = "MCP server" if name.startswith("mcp:") else "provider"
            raise ctx.fail(
                (*path, "providers", index),
                f"unknown {what} {name.removeprefix('mcp:')!r} (not in {where} nor in the "
                "database)",
            )
    if isinstance(spec.on_exhaust, DowngradeSpec):
        check_model_known(ctx, spec.on_exhaust.downgrade_to, (*path, "on_exhaust", "downgrade_to"))


def check_model_known(ctx: Context, model: str, path: Path) -> None:
    # A target with no route would only fail later, at request time, with a 404.
    if model not in ctx.known_models:
        raise ctx.fail(path, f"unknown model {model!r} (not under models: nor in the database)")


# --- rate limit and model policy (at most one per owner) -----------------------------------


def reconcile_rate_limit(
    ctx: Context, spec: RateLimitSpec | None, owner: Owner, path: Path
) -> None:
    existing = RateLimit.objects.filter(**owner.owned()).first()
    label = f"of {owner.label}"
    if spec is None:
        if existing is not None:
            ctx.delete(existing, kind="rate limit", label=label)
        return
    ctx.upsert(
        existing=existing,
        new=functools.partial(RateLimit, **owner.owned()),
        values={
            "requests_per_minute": spec.requests_per_minute,
            "tokens_per_minute": spec.tokens_per_minute,
            "concurrent": spec.concurrent,
        },
        kind="rate limit",
        label=label,
        path=path,
    )


def reconcile_model_policy(
    ctx: Context, spec: ModelPolicySpec | None, owner: Owner, path: Path
) -> None:
    existing = ModelPolicy.objects.filter(**owner.owned()).first()
    label = f"of {owner.label}"
    if spec is None:
        if existing is not None:
            ctx.delete(existing, kind="model policy", label=label)
        return
    for pattern, target in spec.overrides.items():
        check_model_known(ctx, target, (*path, "overrides", pattern))
    ctx.upsert(
        existing=existing,
        new=functools.partial(ModelPolicy, **owner.owned()),
        values={
            "allowed_patterns": list(spec.allow),
            "denied_patterns": list(spec.deny),
            "overrides": dict(spec.overrides),
        },
        kind="model policy",
        label=label,
        path=path,
    )
