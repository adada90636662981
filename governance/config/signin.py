"""Claude Code sign-in in the config file: an organization's `managed_settings` (base layer),
a team's `signin_key` and `managed_settings`. Like budgets, the file is complete for them:
what the organization or team leaves out is removed."""

from __future__ import annotations

import functools
from typing import Any

from governance import managed_settings
from governance.config.context import Context
from governance.config.errors import Path
from governance.config.schema import TeamSpec
from governance.managed_settings import Document as ManagedSettings
from governance.models import Organization, OrganizationSignIn, Team, TeamSignIn, VirtualKey

ORG_KIND = "Claude Code sign-in (organization)"
TEAM_KIND = "Claude Code sign-in (team)"


def _document(ctx: Context, spec: ManagedSettings | None, path: Path) -> dict[str, Any]:
    if spec is None:
        return {}
    document = spec.model_dump(mode="json", by_alias=True, exclude_unset=True)
    try:
        return managed_settings.parse(document)
    except managed_settings.DocumentError as error:  # what the schema alone cannot see (size)
        raise ctx.fail(path, str(error)) from None


def reconcile_organization(
    ctx: Context, spec: ManagedSettings | None, org: Organization, path: Path
) -> None:
    existing = OrganizationSignIn.objects.filter(organization=org).first()
    if spec is None:
        if existing is not None:
            ctx.delete(existing, kind=ORG_KIND, label=org.name)
        return
    ctx.upsert(
        existing=existing,
        new=functools.partial(OrganizationSignIn, organization=org),
        values={"managed_settings": _document(ctx, spec, path)},
        kind=ORG_KIND,
        label=org.name,
        path=path,
    )


def reconcile_team(ctx: Context, spec: TeamSpec, team: Team, path: Path) -> None:
    """Run after the team's keys are applied: `signin_key` names one of them."""
    existing = TeamSignIn.objects.filter(team=team).first()
    if spec.signin_key is None and spec.managed_settings is None:
        if existing is not None:
            ctx.delete(existing, kind=TEAM_KIND, label=str(team))
        return
    key = None
    if spec.signin_key is not None:
        key = VirtualKey.objects.filter(
            team=team, parent__isnull=True, name=spec.signin_key
        ).first()
        if key is None:
            raise ctx.fail(
                (*path, "signin_key"),
                f"unknown key {spec.signin_key!r}: name a top-level key of team {team}",
            )
    ctx.upsert(
        existing=existing,
        new=functools.partial(TeamSignIn, team=team),
        values={
            "signin_key": key,
            "managed_settings": _document(ctx, spec.managed_settings, (*path, "managed_settings")),
        },
        kind=TEAM_KIND,
        label=str(team),
        path=path,
    )
