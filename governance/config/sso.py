"""Single sign-on mapping: an organization's `roles` and a team's `idp_groups`.

Both are collections owned by the organization or team, so the file is complete for them, as
for budgets: what the file lists is created, what the database has beyond it is deleted. The
mappings of every organization (IdpGroupRole without one) are the admin's, never the file's.
Users' roles change at their next sign-in, not at the apply.
"""

from __future__ import annotations

import functools

from governance.config.context import Context
from governance.config.errors import Path
from governance.config.schema import RoleGroupsSpec
from governance.models import IdpGroupRole, Organization, Team, TeamIdpGroup

ROLE_KIND = "IdP group role"
TEAM_KIND = "team IdP group"


def reconcile_role_groups(
    ctx: Context, spec: RoleGroupsSpec, org: Organization, path: Path
) -> None:
    stored = {(row.role, row.group): row for row in IdpGroupRole.objects.filter(organization=org)}
    for role, index, group in spec.pairs():
        if stored.pop((role, group), None) is not None:
            continue
        ctx.upsert(
            existing=None,
            new=functools.partial(IdpGroupRole, organization=org, role=role, group=group),
            values={},
            kind=ROLE_KIND,
            label=_role_label(org, role, group),
            path=(*path, role, index),
        )
    for (role, group), row in sorted(stored.items()):
        ctx.delete(row, kind=ROLE_KIND, label=_role_label(org, role, group))


def reconcile_team_groups(ctx: Context, groups: list[str], team: Team, path: Path) -> None:
    stored = {row.group: row for row in TeamIdpGroup.objects.filter(team=team)}
    for index, group in enumerate(groups):
        if stored.pop(group, None) is not None:
            continue
        ctx.upsert(
            existing=None,
            new=functools.partial(TeamIdpGroup, team=team, group=group),
            values={},
            kind=TEAM_KIND,
            label=f"{team} {group!r}",
            path=(*path, index),
        )
    for group, row in sorted(stored.items()):
        ctx.delete(row, kind=TEAM_KIND, label=f"{team} {group!r}")


def _role_label(org: Organization, role: str, group: str) -> str:
    return f"{org.name} {role} {group!r}"
