"""A "budget used" column (spent / limit / % bar) for the budget, team and key admin lists.

The changelist measures every budget on the page at once (telemetry.dashboards.utilisation:
one period-record query, then one small ledger aggregate per budget, or one rollup read shared
by budgets without a record yet) and hangs the result on each row, so the cell itself runs
no query.

Governance's admin imports nothing from telemetry: TelemetryConfig.ready adds the columns
through governance.admin.base.add_list_column.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Literal

from django.contrib import admin
from django.db.models import Model
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from governance.admin.base import add_list_column
from governance.models import Budget, Team, VirtualKey
from governance.money import format_usd
from telemetry.dashboards.utilisation import WARN_PERCENT, BudgetUse, budget_use, budgets_of

Owner = Literal["budget", "team", "key"]

_ATTR = "_telemetry_budget_use"
COLOURS = {"ok": "#16a34a", "warn": "#d97706", "over": "#dc2626"}
SOURCES = {
    "record": "the period record plus the ledger since it was written",
    "rollups": "rollups (no period record yet)",
    "ledger": "the ledger (no period record yet)",
}


def add_budget_use_columns() -> None:
    """Put the column on the budget, team and key lists, where it always stood."""
    add_list_column(Budget, BudgetUseColumn("budget", after="amount"))
    add_list_column(Team, BudgetUseColumn("team", after="key_count"))
    add_list_column(VirtualKey, BudgetUseColumn("key", after="state"))


class BudgetUseColumn:
    """The "budget used" column of one list: `owner` names what its rows are."""

    name = "budget_use"

    def __init__(self, owner: Owner, *, after: str) -> None:
        self.owner: Owner = owner
        self.after = after

    def prepare(self, rows: Sequence[Model]) -> None:
        if self.owner == "budget":
            budgets = [row for row in rows if isinstance(row, Budget)]
        elif self.owner == "team":
            budgets = budgets_of(teams=[row.pk for row in rows])
        else:
            budgets = budgets_of(keys=[row.pk for row in rows])
        uses = budget_use(budgets)
        by_row: dict[int, list[BudgetUse]] = {}
        for budget in budgets:
            owner = {
                "budget": budget.pk,
                "team": budget.team_id,
                "key": budget.virtual_key_id,
            }[self.owner]
            if owner is not None:
                by_row.setdefault(owner, []).append(uses[budget.pk])
        for row in rows:
            setattr(row, _ATTR, by_row.get(row.pk, []))

    @admin.display(description="budget used")
    def cell(self, obj: Model) -> str:
        uses: list[BudgetUse] | None = getattr(obj, _ATTR, None)
        if uses is None:
            return "-"  # not on a changelist page (e.g. a read-only field elsewhere)
        if not uses:
            return "no budget"
        labels = self.owner != "budget" and len(uses) > 1
        return use_bars(uses, labels=labels)


def use_bar(use: BudgetUse, *, label: str = "") -> SafeString:
    title = f"{use.period.label}: {format_usd(use.spent_micros)} spent, from {SOURCES[use.source]}"
    return percent_bar(use.spent_micros, use.limit_micros, title=title, label=label)


def percent_bar(spent: int, limit: int, *, title: str = "", label: str = "") -> SafeString:
    """`[#####    ] $42.00 / $100.00 · 42%`, in inline styles (no stylesheet in the admin)."""
    percent = spent * 100 // limit if limit > 0 else 100
    level = "over" if percent >= 100 else "warn" if percent >= WARN_PERCENT else "ok"
    return format_html(
        '<div title="{}" style="white-space:nowrap;margin:1px 0">'
        "{}"
        '<span style="display:inline-block;width:80px;height:8px;background:#e5e7eb;'
        'border-radius:4px;overflow:hidden;vertical-align:middle;margin-right:6px">'
        '<span style="display:block;height:100%;width:{}%;background:{}"></span></span>'
        "{} / {} · <strong>{}%</strong></div>",
        title,
        format_html("<small>{}</small> ", label) if label else "",
        min(percent, 100),
        COLOURS[level],
        format_usd(spent),
        format_usd(limit),
        percent,
    )


def use_bars(uses: Iterable[BudgetUse], *, labels: bool) -> SafeString:
    return format_html_join(
        "", "{}", ((use_bar(use, label=short_label(use.budget) if labels else ""),) for use in uses)
    )


def short_label(budget: Budget) -> str:
    tier = ",".join([*budget.model_patterns, *budget.provider_names])
    return f"{budget.period} {tier}".strip()
