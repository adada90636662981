"""GET /v1/organizations/spend_limits/effective: each key's effective spend limit per period,
in Anthropic's SpendSummary shape.

A principal is a live key (a `user` scope names it). Its effective limit for a period is the
budget of its chain (the key, its parent key, its team, its project, its organization) that
leaves it least to spend: the one that blocks it first. Unlike Anthropic's per-seat defaults,
a team or organization budget here is a pool its keys share, so `period_to_date_spend` is the
spend counted against that budget (the key's own for a key budget, the team's for a team
budget). With no limit for the period, `amount`, `source` and `spend_limit_id` are null and the
spend is the key's own. Periods are the organization's calendar periods in its time zone.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from governance import periods, spend_limits
from governance.access import Access
from governance.models import Budget, Organization, VirtualKey
from telemetry import rollups
from telemetry.adminapi.base import (
    ERRORS,
    AdminApiError,
    AdminApiView,
    PeriodField,
    organization_for,
    query_limit,
    query_list,
)
from telemetry.dashboards import utilisation

MAX_MEMBERS = 100
MAX_USER_IDS = 100
SCOPE_RANK = {"key": 0, "team": 1, "project": 2, "organization": 3}

SUMMARY_SCHEMA = inline_serializer(
    name="SpendSummary",
    fields={
        "scope": serializers.DictField(),
        "groups": serializers.ListField(child=serializers.CharField(), help_text="Its team."),
        "actor": serializers.DictField(),
        "amount": serializers.CharField(allow_null=True),
        "currency": serializers.CharField(),
        "period": PeriodField(),
        "source": serializers.DictField(allow_null=True),
        "spend_limit_id": serializers.CharField(allow_null=True),
        "period_to_date_spend": serializers.CharField(help_text="USD cents, up to 3 decimals."),
    },
)
EFFECTIVE_SCHEMA = inline_serializer(
    name="SpendSummaryList",
    fields={
        "data": serializers.ListField(child=SUMMARY_SCHEMA),
        "has_more": serializers.BooleanField(),
        "next_page": serializers.CharField(allow_null=True),
    },
)


@dataclass(frozen=True, slots=True)
class Principal:
    key: VirtualKey
    team_id: int | None
    project_id: int | None
    team_name: str

    @property
    def path(self) -> str:
        return spend_limits.key_path(self.key)

    def covered_by(self, budget: Budget) -> bool:
        if budget.virtual_key_id is not None:
            return budget.virtual_key_id in (self.key.pk, self.key.parent_id)
        if budget.team_id is not None:
            return budget.team_id == self.team_id
        if budget.project_id is not None:
            return budget.project_id == self.project_id
        return True


def principals(access: Access, organization: Organization) -> list[Principal]:
    keys = access.visible(
        VirtualKey.objects.filter(organization=organization, revoked_at__isnull=True)
        .exclude(parent__revoked_at__isnull=False)
        .select_related("parent", "team", "parent__team")
    ).order_by("pk")
    result = []
    for key in keys:
        holder = key.parent or key
        team = holder.team
        result.append(Principal(key, holder.team_id, holder.project_id, team.name if team else ""))
    return result


def _periods(request: Request) -> list[str]:
    names = query_list(request, "period")
    unknown = [name for name in names if name not in spend_limits.PERIODS]
    if unknown:
        raise AdminApiError(
            400,
            "period: Invalid enum value. Expected 'daily' | 'weekly' | 'monthly', "
            f"received '{unknown[0]}'",
        )
    return list(dict.fromkeys(names))


def _offset(token: str | None) -> int:
    if not token:
        return 0
    try:
        text = base64.urlsafe_b64decode(token.removeprefix("page_").encode() + b"==").decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        text = ""
    if not text.startswith("m") or not text[1:].isdigit() or len(text) > 12:
        raise AdminApiError(400, "page: not a page token of this report")
    return int(text[1:])


def _page_token(offset: int) -> str:
    return "page_" + base64.urlsafe_b64encode(f"m{offset}".encode()).decode().rstrip("=")


class Figures:
    """The current period's spend of the organization's budgets and of each key, read once."""

    def __init__(self, organization: Organization, period_names: Iterable[str]) -> None:
        now = timezone.now()
        wanted = {spend_limits.PERIODS[name] for name in period_names}
        self.budgets = [
            budget
            for budget in spend_limits.spend_limits_among(spend_limits.budgets_of(organization))
            if budget.period in wanted and budget.on_exhaust != Budget.OnExhaust.ALERT
        ]
        for budget in self.budgets:
            budget.organization = organization  # budget_use reads its time zone
        self.uses = utilisation.budget_use(self.budgets, now=now)
        self.own: dict[str, dict[int, int]] = {}
        for period in wanted:
            window = periods.window(period, organization.timezone, now)
            start = window.start or now
            totals = rollups.totals(organization.pk, start, now, group_by="key")
            self.own[period] = {int(t.group or 0): t.cost_micros for t in totals}

    def binding(self, principal: Principal, period: str) -> Budget | None:
        """The budget of the key's chain for `period` that leaves it least to spend."""
        chain = [b for b in self.budgets if b.period == period and principal.covered_by(b)]
        if not chain:
            return None

        def room(budget: Budget) -> tuple[int, int]:
            use = self.uses[budget.pk]
            return (budget.amount_micros - use.spent_micros, SCOPE_RANK[budget.scope])

        return min(chain, key=room)

    def own_spend(self, principal: Principal, period: str) -> int:
        return self.own.get(period, {}).get(principal.key.pk, 0)


def summary(principal: Principal, period_name: str, figures: Figures) -> dict[str, Any]:
    period = spend_limits.PERIODS[period_name]
    budget = figures.binding(principal, period)
    if budget is None:
        amount, source, limit_id = None, None, None
        spent = figures.own_spend(principal, period)
    else:
        amount = spend_limits.cents(budget.amount_micros)
        source = spend_limits.scope_of(budget).as_json()
        limit_id = spend_limits.spend_limit_id(budget)
        spent = figures.uses[budget.pk].spent_micros
    owner = principal.key.owner
    return {
        "scope": {"type": "user", "user_id": principal.path},
        "groups": [principal.team_name] if principal.team_name else [],
        "actor": {
            "type": "user_actor",
            "user_id": principal.path,
            "name": principal.key.name,
            "email_address": owner if "@" in owner else None,
            "deleted": False,
        },
        "amount": amount,
        "currency": spend_limits.CURRENCY,
        "period": period_name,
        "source": source,
        "spend_limit_id": limit_id,
        "period_to_date_spend": spend_limits.cents_to_3_places(spent),
        "_spent_micros": spent,
    }


def member_rows(
    principal: Principal, asked: Sequence[str], figures: Figures
) -> list[dict[str, Any]]:
    """One row per asked period; with none asked, one per period the key has a limit in (a
    monthly row without a limit when it has none)."""
    if asked:
        return [summary(principal, name, figures) for name in asked]
    rows = [
        summary(principal, name, figures)
        for name in spend_limits.PERIODS
        if figures.binding(principal, spend_limits.PERIODS[name]) is not None
    ]
    return rows or [summary(principal, "monthly", figures)]


class EffectiveView(AdminApiView):
    @extend_schema(
        operation_id="spend_limits_effective",
        summary="Each key's effective spend limit and period-to-date spend",
        parameters=[
            OpenApiParameter("user_ids[]", OpenApiTypes.STR, many=True, description="Key names."),
            OpenApiParameter(
                "period[]", OpenApiTypes.STR, many=True, enum=list(spend_limits.PERIODS)
            ),
            OpenApiParameter("sort", OpenApiTypes.STR, enum=["spend_desc"]),
            OpenApiParameter("q", OpenApiTypes.STR, description="Substring of name or owner."),
            OpenApiParameter("limit", OpenApiTypes.INT, description="Keys per page, 1-100."),
            OpenApiParameter("page", OpenApiTypes.STR),
            OpenApiParameter("organization", OpenApiTypes.STR, description="Name or id."),
        ],
        responses={200: EFFECTIVE_SCHEMA, **ERRORS},
        tags=["anthropic-admin-api"],
    )
    def get(self, request: Request) -> Response:
        organization = organization_for(request, self.access)
        asked = _periods(request)
        user_ids = query_list(request, "user_ids")
        if len(user_ids) > MAX_USER_IDS:
            raise AdminApiError(400, f"user_ids: at most {MAX_USER_IDS}")
        sort = request.query_params.get("sort")
        if sort not in (None, "spend_desc"):
            raise AdminApiError(400, "sort: Invalid enum value. Expected 'spend_desc'")
        if sort and len(asked) != 1:
            raise AdminApiError(400, "sort=spend_desc needs exactly one period[]")
        limit = query_limit(request, default=20, maximum=MAX_MEMBERS)
        offset = _offset(request.query_params.get("page"))
        figures = Figures(organization, asked or spend_limits.PERIODS)
        members = _members(
            request,
            self.access,
            organization=organization,
            user_ids=user_ids,
            figures=figures,
            asked=asked,
        )
        if sort:
            members.sort(key=lambda rows: -rows[0]["_spent_micros"])
        page = members[offset : offset + limit]
        more = offset + limit < len(members)
        data = [{k: v for k, v in row.items() if k != "_spent_micros"} for m in page for row in m]
        return Response(
            {
                "data": data,
                "has_more": more,
                "next_page": _page_token(offset + limit) if more else None,
            }
        )


def _members(
    request: Request,
    access: Access,
    *,
    organization: Organization,
    user_ids: Sequence[str],
    figures: Figures,
    asked: Sequence[str],
) -> list[list[dict[str, Any]]]:
    """Each member's rows: the keys named in user_ids[], else every key with spend this
    period (Anthropic lists only principals with recorded spend); `q` narrows by substring."""
    text = (request.query_params.get("q") or "").lower()
    members = []
    for principal in principals(access, organization):
        if user_ids and principal.path not in user_ids:
            continue
        if text and text not in principal.path.lower() and text not in principal.key.owner.lower():
            continue
        rows = member_rows(principal, asked, figures)
        if not user_ids and not any(
            figures.own_spend(principal, spend_limits.PERIODS[row["period"]]) for row in rows
        ):
            continue
        members.append(rows)
    return members
