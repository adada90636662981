"""Who may read telemetry's rows: governance.access rules for the ledger, rollups and alerts.

Registered from TelemetryConfig.ready, since governance imports nothing of telemetry. The
ledger and rollup cells follow Access.usage_condition (organization roles read their
organizations' rows, team leads their teams'); nobody edits them. Alert channels belong to
finance and platform admins; alert events and budget period records are a record, read-only.
"""

from __future__ import annotations

from typing import Any

from governance.access import ALL_ROLES, Access, Rule, register
from governance.models import Budget, Provider, Role
from telemetry.models import (
    AlertChannel,
    AlertEvent,
    BudgetPeriodRecord,
    SessionRollup,
    SpendRollup,
    UsageRecord,
)

ORGANIZATION_ROLES = frozenset({Role.PLATFORM_ADMIN, Role.FINANCE, Role.AUDITOR})
NOBODY: frozenset[Role] = frozenset()

USAGE = Rule(ALL_ROLES, NOBODY, ("organization_id",), team_paths=("team_id",))


def register_rules() -> None:
    for model in (UsageRecord, SpendRollup, SessionRollup):
        register(model, USAGE)
    register(
        AlertChannel,
        Rule(
            ORGANIZATION_ROLES,
            frozenset({Role.PLATFORM_ADMIN, Role.FINANCE}),
            ("organization_id",),
        ),
    )
    register(AlertEvent, Rule(ORGANIZATION_ROLES, NOBODY, ("organization_id",)))
    # A period record keeps its budget's id only: it is read by whoever reads the budget.
    register(BudgetPeriodRecord, Rule(ALL_ROLES, NOBODY, None, through=("budget_id", Budget)))


# --- the admin's pages of telemetry that are not rows of one organization -------------------


def reads_all_usage(user: Any) -> bool:
    """Whether the user reads every organization's usage: the dead letters, the spool backlog
    and the unpriced-model warning are about requests of any organization."""
    return Access.of(user).usage_condition() is None


def handles_dead_letters(user: Any) -> bool:
    """Retrying or discarding dead letters writes to every organization's ledger."""
    return Access.of(user).holds(Role.PLATFORM_ADMIN)


def sees_provider_health(user: Any) -> bool:
    return Access.of(user).allows(Provider, "view")
