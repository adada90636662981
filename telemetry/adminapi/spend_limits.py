"""/v1/organizations/spend_limits: Anthropic's spend-limit routes over the gateway's budgets
(governance/spend_limits.py has the mapping; writes go through governance services, audited).

- GET  spend_limits?limit&page&after_id&before_id&scope_type[]  list, in creation order
- POST spend_limits {scope, amount, period[, currency]}      create or replace on (scope, period)
- GET / DELETE spend_limits/{id}
- GET  spend_limits/effective                                   (telemetry/adminapi/effective.py)

What a token sees and may change is its user's roles' answer (governance.access): a budget out
of reach is "not found", one in reach that the role may not change is 403.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import QuerySet
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from governance import spend_limits
from governance.access import Access
from governance.models import Budget, Organization, Role
from governance.services import spend_limits as spend_limit_services
from telemetry.adminapi.base import (
    ERRORS,
    AdminApiError,
    AdminApiView,
    PeriodField,
    organization_for,
    query_limit,
    query_list,
    timestamp,
)

NOT_FOUND = "spend limit not found"
WRITE_REFUSED = "requires write:spend_limits"
MAX_LIST = 1000
MAX_NAME = 201  # PARENT/NAME of two 100-character key names
PERIOD_CHOICES = "'daily' | 'weekly' | 'monthly'"
SCOPE_NAMES = {"rbac_group": "rbac_group_id", "workspace": "workspace_id", "user": "user_id"}
OWNER_WORDS = {"rbac_group": "group", "workspace": "workspace", "user": "user"}

SCOPE_SCHEMA = inline_serializer(
    name="SpendLimitScope",
    fields={
        "type": serializers.ChoiceField(choices=spend_limits.SCOPE_TYPES),
        "rbac_group_id": serializers.CharField(required=False, help_text="A team's name."),
        "workspace_id": serializers.CharField(required=False, help_text="A project's name."),
        "user_id": serializers.CharField(
            required=False, help_text="A key's name (a sub-key: PARENT/NAME)."
        ),
    },
)
SPEND_LIMIT_SCHEMA = inline_serializer(
    name="SpendLimit",
    fields={
        "type": serializers.CharField(help_text='Always "spend_limit".'),
        "id": serializers.CharField(help_text="spl_<budget id>"),
        "scope": SCOPE_SCHEMA,
        "amount": serializers.CharField(
            allow_null=True, help_text="USD cents as a string; null: no enforced limit."
        ),
        "currency": serializers.CharField(),
        "period": PeriodField(),
        "is_enabled": serializers.BooleanField(),
        "created_at": serializers.DateTimeField(),
        "updated_at": serializers.DateTimeField(),
    },
)
SET_SCHEMA = inline_serializer(
    name="SpendLimitSet",
    fields={
        "scope": SCOPE_SCHEMA,
        "amount": serializers.CharField(allow_null=True, help_text="Whole USD cents, or null."),
        "period": PeriodField(required=False),
        "currency": serializers.CharField(required=False, help_text='Only "USD".'),
    },
)
LIST_SCHEMA = inline_serializer(
    name="SpendLimitList",
    fields={
        "data": serializers.ListField(child=SPEND_LIMIT_SCHEMA),
        "has_more": serializers.BooleanField(),
        "first_id": serializers.CharField(allow_null=True),
        "last_id": serializers.CharField(allow_null=True),
        "next_page": serializers.CharField(allow_null=True),
    },
)
DELETED_SCHEMA = inline_serializer(
    name="SpendLimitDeleted",
    fields={"type": serializers.CharField(), "id": serializers.CharField()},
)


def spend_limit_json(budget: Budget) -> dict[str, Any]:
    return {
        "type": "spend_limit",
        "id": spend_limits.spend_limit_id(budget),
        "scope": spend_limits.scope_of(budget).as_json(),
        "amount": spend_limits.amount_of(budget),
        "currency": spend_limits.CURRENCY,
        "period": spend_limits.PERIOD_NAMES[budget.period],
        "is_enabled": True,
        "created_at": timestamp(budget.created_at),
        "updated_at": timestamp(budget.updated_at),
    }


def _budgets(access: Access) -> QuerySet[Budget]:
    return access.visible(
        Budget.objects.filter(period__in=list(spend_limits.PERIOD_NAMES)).select_related(
            "organization", "team", "project", "virtual_key", "virtual_key__parent"
        )
    ).order_by("pk")


def visible_spend_limit(access: Access, spend_limit_id: str) -> Budget:
    pk = spend_limits.budget_pk(spend_limit_id)
    budget = _budgets(access).filter(pk=pk).first() if pk is not None else None
    if budget is None or not spend_limits.is_spend_limit(budget):
        raise AdminApiError(404, NOT_FOUND)
    return budget


# --- list and set ------------------------------------------------------------------------------


def _page_token(pk: int) -> str:
    return "page_" + base64.urlsafe_b64encode(str(pk).encode()).decode().rstrip("=")


def _page_position(token: str) -> int:
    try:
        text = base64.urlsafe_b64decode(token.removeprefix("page_").encode() + b"==").decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        text = ""
    if not text.isdigit() or len(text) > 18:
        raise AdminApiError(400, "page: not a page token of this list")
    return int(text)


def _id_position(request: Request, name: str) -> int | None:
    value = request.query_params.get(name)
    if value is None:
        return None
    pk = spend_limits.budget_pk(value)
    if pk is None:
        raise AdminApiError(400, f"{name}: not a spend limit id")
    return pk


def _scope_types(request: Request) -> set[str]:
    wanted = set(query_list(request, "scope_type"))
    foreign = wanted & set(spend_limits.FOREIGN_SCOPE_TYPES)
    if foreign:
        raise AdminApiError(
            400, f"scope_type: {sorted(foreign)[0]!r} does not apply to this organization"
        )
    unknown = wanted - set(spend_limits.SCOPE_TYPES)
    if unknown:
        raise AdminApiError(400, f"scope_type: invalid value {sorted(unknown)[0]!r}")
    return wanted


def _window(rows: Sequence[Budget], request: Request, limit: int) -> tuple[list[Budget], bool]:
    """The page of `rows` (creation order) the cursor parameters ask for, and whether more
    follow in the direction read."""
    after = _id_position(request, "after_id")
    before = _id_position(request, "before_id")
    if after is not None and before is not None:
        raise AdminApiError(400, "after_id and before_id are mutually exclusive")
    page = request.query_params.get("page")
    if page:
        after = _page_position(page)
    if before is not None:
        earlier = [row for row in rows if row.pk < before]
        return earlier[-limit:], len(earlier) > limit
    later = [row for row in rows if after is None or row.pk > after]
    return later[:limit], len(later) > limit


class SpendLimitsView(AdminApiView):
    @extend_schema(
        operation_id="spend_limits_list",
        summary="List spend limits",
        parameters=[
            OpenApiParameter("limit", OpenApiTypes.INT, description="1-1000, default 20."),
            OpenApiParameter("page", OpenApiTypes.STR, description="A previous `next_page`."),
            OpenApiParameter("after_id", OpenApiTypes.STR),
            OpenApiParameter("before_id", OpenApiTypes.STR),
            OpenApiParameter(
                "scope_type[]",
                OpenApiTypes.STR,
                many=True,
                enum=[*spend_limits.SCOPE_TYPES, *spend_limits.FOREIGN_SCOPE_TYPES],
            ),
            OpenApiParameter("organization", OpenApiTypes.STR, description="Name or id."),
        ],
        responses={200: LIST_SCHEMA, **ERRORS},
        tags=["anthropic-admin-api"],
    )
    def get(self, request: Request) -> Response:
        organization = organization_for(request, self.access)
        limit = query_limit(request, default=20, maximum=MAX_LIST)
        types = _scope_types(request)
        rows = [
            budget
            for budget in spend_limits.spend_limits_among(
                _budgets(self.access).filter(organization=organization)
            )
            if not types or spend_limits.scope_of(budget).type in types
        ]
        page, more = _window(rows, request, limit)
        return Response(
            {
                "data": [spend_limit_json(budget) for budget in page],
                "has_more": more,
                "first_id": spend_limits.spend_limit_id(page[0]) if page else None,
                "last_id": spend_limits.spend_limit_id(page[-1]) if page else None,
                "next_page": _page_token(page[-1].pk) if more and page else None,
            }
        )

    @extend_schema(
        operation_id="spend_limits_set",
        summary="Create or replace a spend limit on (scope, period)",
        request=SET_SCHEMA,
        parameters=[OpenApiParameter("organization", OpenApiTypes.STR, description="Name or id.")],
        responses={200: SPEND_LIMIT_SCHEMA, **ERRORS},
        tags=["anthropic-admin-api"],
    )
    def post(self, request: Request) -> Response:
        body = request.data
        if not isinstance(body, dict):
            raise AdminApiError(400, "body: Expected object")
        organization = organization_for(request, self.access)
        scope, period, amount = parse_set(body)
        owner = _owner(organization, scope, self.access)
        existing = next(spend_limits.spend_limits_among(spend_limits.matching(owner, period)), None)
        candidate = existing or Budget(period=period, **spend_limits.owner_fields(owner))
        if not self.access.can_change(candidate):
            if existing is not None and not self.access.can_view(existing):
                raise AdminApiError(404, NOT_FOUND)
            raise AdminApiError(403, WRITE_REFUSED)
        try:
            result = spend_limit_services.set_spend_limit(
                actor=self.actor(),
                owner=owner,
                period=period,
                amount_micros=amount,
                within_team_ceiling=_team_lead_only(self.access, organization),
                note=self.note(),
            )
        except DjangoValidationError as exc:
            raise AdminApiError(400, _validation_message(exc)) from exc
        return Response(spend_limit_json(result.budget))


def _team_lead_only(access: Access, organization: Organization) -> bool:
    """A team lead (and not an admin or finance of the organization) shares out the team's
    ceiling: their key budgets may not exceed it."""
    return not (
        access.holds(Role.PLATFORM_ADMIN, organization.pk)
        or access.holds(Role.FINANCE, organization.pk)
    )


def _validation_message(exc: DjangoValidationError) -> str:
    if hasattr(exc, "message_dict"):
        return "; ".join(f"{k}: {' '.join(v)}" for k, v in exc.message_dict.items())
    return " ".join(exc.messages)


def _owner(
    organization: Organization, scope: spend_limits.Scope, access: Access
) -> spend_limits.Owner:
    owner = spend_limits.owner_of(organization, scope)
    if owner is None or not access.can_view(owner):
        what = OWNER_WORDS.get(scope.type, scope.type)
        raise AdminApiError(404, f"{what} {scope.ref!r} not found")
    return owner


def parse_set(body: dict[str, Any]) -> tuple[spend_limits.Scope, str, int | None]:
    """(scope, budget period, amount in micro-dollars or None) from a set body; the messages
    are those of Anthropic's gateway."""
    currency = body.get("currency", spend_limits.CURRENCY)
    if currency != spend_limits.CURRENCY:
        raise AdminApiError(400, 'currency: Invalid literal value, expected "USD"')
    period_name = body.get("period", "monthly")
    if not isinstance(period_name, str) or period_name not in spend_limits.PERIODS:
        raise AdminApiError(
            400,
            f"period: Invalid enum value. Expected {PERIOD_CHOICES}, received '{period_name}'",
        )
    if "amount" not in body:
        raise AdminApiError(400, "amount: Required")
    amount = body["amount"]
    if amount is not None and not isinstance(amount, str):
        raise AdminApiError(400, f"amount: Expected string, received {_json_type(amount)}")
    micros = spend_limits.parse_cents(amount) if amount is not None else None
    if amount is not None and micros is None:
        raise AdminApiError(400, "amount: must be a non-negative whole number of cents")
    return parse_scope(body.get("scope")), spend_limits.PERIODS[period_name], micros


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, dict):
        return "object"
    return "array" if isinstance(value, list) else "string"


def parse_scope(value: Any) -> spend_limits.Scope:
    if not isinstance(value, dict):
        raise AdminApiError(400, "scope: Required")
    kind = value.get("type")
    if not isinstance(kind, str):
        raise AdminApiError(400, f"scope.type: invalid value {kind!r}")
    if kind in spend_limits.FOREIGN_SCOPE_TYPES:
        raise AdminApiError(400, f"scope: type '{kind}' does not apply to this organization")
    if kind not in spend_limits.SCOPE_TYPES:
        raise AdminApiError(400, f"scope.type: invalid value {kind!r}")
    if kind == "organization":
        return spend_limits.Scope("organization")
    field = SCOPE_NAMES[kind]
    ref = value.get(field)
    if not isinstance(ref, str) or not ref.strip():
        raise AdminApiError(400, f"scope.{field}: Required")
    ref = ref.strip()
    # Control characters and lone surrogates (no database stores those) are no name.
    if not ref.isprintable() or len(ref) > MAX_NAME:
        raise AdminApiError(400, f"scope.{field}: not a name")
    return spend_limits.Scope(kind, ref)


# --- one spend limit ---------------------------------------------------------------------------


class SpendLimitView(AdminApiView):
    @extend_schema(
        operation_id="spend_limits_retrieve",
        summary="One spend limit",
        responses={200: SPEND_LIMIT_SCHEMA, **ERRORS},
        tags=["anthropic-admin-api"],
    )
    def get(self, request: Request, spend_limit_id: str) -> Response:
        return Response(spend_limit_json(visible_spend_limit(self.access, spend_limit_id)))

    @extend_schema(
        operation_id="spend_limits_delete",
        summary="Delete a spend limit (its budget)",
        responses={200: DELETED_SCHEMA, **ERRORS},
        tags=["anthropic-admin-api"],
    )
    def delete(self, request: Request, spend_limit_id: str) -> Response:
        budget = visible_spend_limit(self.access, spend_limit_id)
        if not self.access.can_change(budget):
            raise AdminApiError(403, WRITE_REFUSED)
        answer_id = spend_limits.spend_limit_id(budget)
        spend_limit_services.delete_spend_limit(actor=self.actor(), budget=budget, note=self.note())
        return Response({"type": "spend_limit_deleted", "id": answer_id})
