"""Anthropic's spend limits, mapped onto the gateway's budgets (reads; writes are in
governance/services/spend_limits.py).

A spend limit is a budget of a plain kind: one owner, a daily, weekly or monthly period, and no
model or provider filter. Its id is `spl_<budget id>`. Scopes map onto owners:

| spend-limit scope | budget owner |
|---|---|
| `{"type": "organization"}` | the organization |
| `{"type": "rbac_group", "rbac_group_id": NAME}` | the team NAME |
| `{"type": "workspace", "workspace_id": NAME}` | the project NAME |
| `{"type": "user", "user_id": NAME}` | the key NAME (a developer sub-key: `PARENT/NAME`) |

`amount` is a whole number of USD cents as a string. A budget that only alerts (on_exhaust
"alert") enforces nothing, so it reads as `amount: null`, Anthropic's "no limit" override.
Budgets of other kinds (quarter or lifetime periods, model tiers, provider budgets) have no
spend-limit shape and are left out.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from decimal import ROUND_DOWN, Decimal

from django.db.models import QuerySet

from governance.models import Budget, Organization, Project, Team, VirtualKey

PERIODS: dict[str, str] = {
    "daily": Budget.Period.DAY,
    "weekly": Budget.Period.WEEK,
    "monthly": Budget.Period.MONTH,
}
PERIOD_NAMES: dict[str, str] = {str(period): name for name, period in PERIODS.items()}
SCOPE_TYPES = ("organization", "rbac_group", "workspace", "user")
# Anthropic's other scope types: valid there, with nothing to map onto here.
FOREIGN_SCOPE_TYPES = ("seat_tier", "organization_service", "usage_tier")
ID_PREFIX = "spl_"
MICROS_PER_CENT = 10_000
CURRENCY = "USD"
# At most 14 digits: the micro-dollars of the largest fit a 64-bit integer column.
_CENTS = re.compile(r"[0-9]{1,14}")

Owner = Organization | Team | Project | VirtualKey


@dataclass(frozen=True, slots=True)
class Scope:
    """A spend-limit scope: its type and the name of what it names ("" for organization)."""

    type: str
    ref: str = ""

    def as_json(self) -> dict[str, str]:
        field = {"rbac_group": "rbac_group_id", "workspace": "workspace_id", "user": "user_id"}
        if self.type == "organization":
            return {"type": "organization"}
        return {"type": self.type, field[self.type]: self.ref}


def spend_limit_id(budget: Budget) -> str:
    return f"{ID_PREFIX}{budget.pk}"


def budget_pk(spend_limit: str) -> int | None:
    """The budget id in a spend-limit id, or None when it is not one of ours."""
    digits = spend_limit.removeprefix(ID_PREFIX)
    if spend_limit == digits or not digits.isdigit() or len(digits) > 18:
        return None
    return int(digits)


def key_path(key: VirtualKey) -> str:
    """How a key is named in a `user` scope: its name, or PARENT/NAME for a sub-key."""
    return f"{key.parent.name}/{key.name}" if key.parent is not None else key.name


def is_spend_limit(budget: Budget) -> bool:
    return budget.period in PERIOD_NAMES and not budget.model_patterns and not budget.provider_names


def scope_of(budget: Budget) -> Scope:
    if budget.virtual_key is not None:
        return Scope("user", key_path(budget.virtual_key))
    if budget.team is not None:
        return Scope("rbac_group", budget.team.name)
    if budget.project is not None:
        return Scope("workspace", budget.project.name)
    return Scope("organization")


def amount_of(budget: Budget) -> str | None:
    """USD cents as a decimal string; None for a budget that enforces nothing."""
    if budget.on_exhaust == Budget.OnExhaust.ALERT:
        return None
    return cents(budget.amount_micros)


def cents(micros: int) -> str:
    """Micro-dollars as a decimal string of cents, exact to the micro-dollar ("1234.5")."""
    value = Decimal(micros) / MICROS_PER_CENT
    text = f"{value:f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def cents_to_3_places(micros: int) -> str:
    """Spend as Anthropic reports it: cents with at most three decimals, rounded down."""
    value = (Decimal(micros) / MICROS_PER_CENT).quantize(Decimal("0.001"), rounding=ROUND_DOWN)
    text = f"{value:f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def parse_cents(text: str) -> int | None:
    """Micro-dollars of a whole-number string of cents; None when it is not one."""
    if not _CENTS.fullmatch(text):
        return None
    return int(text) * MICROS_PER_CENT


def budgets_of(organization: Organization) -> QuerySet[Budget]:
    """The organization's budgets in creation order, owners loaded (filter with
    `spend_limits_among`: the kind of a budget is decided in Python, JSON equality not being
    portable across databases)."""
    return (
        Budget.objects.filter(organization=organization, period__in=list(PERIOD_NAMES))
        .select_related("team", "project", "virtual_key", "virtual_key__parent")
        .order_by("pk")
    )


def spend_limits_among(budgets: Iterable[Budget]) -> Iterator[Budget]:
    return (budget for budget in budgets if is_spend_limit(budget))


def key_by_path(organization: Organization, path: str) -> VirtualKey | None:
    """The live key named `path` in the organization (NAME, or PARENT/NAME for a sub-key)."""
    parent_name, _, name = path.rpartition("/")
    keys = VirtualKey.objects.select_related("parent", "team").filter(
        organization=organization, name=name, revoked_at__isnull=True
    )
    if parent_name:
        keys = keys.filter(parent__name=parent_name, parent__parent__isnull=True)
    else:
        keys = keys.filter(parent__isnull=True)
    return keys.first()


def owner_of(organization: Organization, scope: Scope) -> Owner | None:
    """What the scope names in the organization, or None when nothing has that name."""
    if scope.type == "organization":
        return organization
    if scope.type == "rbac_group":
        return Team.objects.filter(organization=organization, name=scope.ref).first()
    if scope.type == "workspace":
        return Project.objects.filter(organization=organization, name=scope.ref).first()
    if scope.type == "user":
        return key_by_path(organization, scope.ref)
    raise ValueError(f"unknown scope type {scope.type!r}")


def owner_fields(owner: Owner) -> dict[str, Owner | None]:
    """The Budget fields that make `owner` its owner."""
    if isinstance(owner, Organization):
        return {"organization": owner}
    kind = {Team: "team", Project: "project", VirtualKey: "virtual_key"}[type(owner)]
    return {"organization": owner.organization, kind: owner}


def matching(owner: Owner, period: str) -> QuerySet[Budget]:
    """Budgets of `owner` with `period`, oldest first (the spend limit is the first plain one)."""
    fields = {"team": None, "project": None, "virtual_key": None, **owner_fields(owner)}
    filters = {
        (f"{name}__isnull" if value is None else name): (True if value is None else value)
        for name, value in fields.items()
    }
    return Budget.objects.filter(period=period, **filters).order_by("pk")
