"""Who may open /logs and /dashboards/, and which requests and spend each user reads there.

A role is needed (a membership, or superuser), not merely staff. Organization roles (platform
admin, finance, auditor) read their organizations' requests and spend; team leads their teams'
(governance.access.Access.usage_condition). The conditions are on the ledger's and the rollup
cells' own organization_id / team_id columns, which lead their indexes, so a scoped page costs
what an unscoped one does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from django.contrib.auth.decorators import user_passes_test
from django.db.models import Model, QuerySet
from django.http import HttpRequest

from governance.access import Access
from governance.models import Organization, Role, Team

M = TypeVar("M", bound=Model)
V = TypeVar("V", bound=Callable[..., Any])
ORGANIZATION_ROLES = (Role.PLATFORM_ADMIN, Role.FINANCE, Role.AUDITOR)


def _has_role(user: Any) -> bool:
    return Access.of(user).has_any_role


def role_required(view: V) -> V:
    """Like staff_member_required (to the admin login otherwise), but a gateway role decides."""
    wrapped: V = user_passes_test(_has_role, login_url="admin:login")(view)
    return wrapped


def access_of(request: HttpRequest) -> Access:
    return Access.of(request.user)


def usage_rows(request: HttpRequest, rows: QuerySet[M]) -> QuerySet[M]:
    """The ledger rows (or rollup cells) of `rows` the user may read."""
    condition = access_of(request).usage_condition()
    if condition is None:
        return rows
    return rows.filter(condition) if condition else rows.none()


def visible(request: HttpRequest, rows: QuerySet[M]) -> QuerySet[M]:
    """Rows of a governance model the user may see (for the filter menus)."""
    return access_of(request).visible(rows)


def usage_organizations(request: HttpRequest) -> QuerySet[Organization]:
    """The organizations whose spend the user reads, wholly or through a team they lead."""
    condition = access_of(request).usage_condition(organization_field="pk", team_field="teams__id")
    rows = Organization.objects.all()
    if condition is None:
        return rows
    return rows.filter(condition).distinct() if condition else rows.none()


def usage_teams(request: HttpRequest, organization_id: int) -> frozenset[int] | None:
    """None when the user reads the whole organization's spend; else the teams they lead in it."""
    access = access_of(request)
    if access.organizations(ORGANIZATION_ROLES).covers(organization_id):
        return None
    led = Team.objects.filter(pk__in=access.led_teams, organization_id=organization_id)
    return frozenset(led.values_list("pk", flat=True))
