"""Organizations, their teams and projects, and everything nested under them."""

from __future__ import annotations

import functools

from governance.config import keys, nested, signin, sso
from governance.config.context import Context
from governance.config.errors import Path
from governance.config.schema import OrganizationSpec, ProjectSpec, TeamSpec
from governance.models import Organization, Project, Team


def apply_organization(ctx: Context, spec: OrganizationSpec, path: Path) -> None:
    org = ctx.upsert(
        existing=Organization.objects.filter(name=spec.name).first(),
        new=functools.partial(Organization, name=spec.name),
        values={
            "display_name": spec.display_name,
            "timezone": spec.timezone,
            "admission_fail_mode": spec.admission_fail_mode,
            "log_retention_days": spec.log_retention_days,
            "unpriced_models": spec.unpriced_models,
            "unpriced_fallback_model": spec.unpriced_fallback_model,
            "subscription_traffic": spec.subscription_traffic,
        },
        kind="organization",
        label=spec.name,
        path=path,
    )
    ctx.declared_organizations.append(org)
    owner = nested.organization_owner(org)
    sso.reconcile_role_groups(ctx, spec.roles, org, (*path, "roles"))
    signin.reconcile_organization(ctx, spec.managed_settings, org, (*path, "managed_settings"))
    nested.reconcile_budgets(ctx, spec.budgets, owner, (*path, "budgets"))
    # Projects first: a team's key may charge to one of them.
    for index, project in enumerate(spec.projects):
        _apply_project(ctx, project, org, (*path, "projects", index))
    for index, team in enumerate(spec.teams):
        _apply_team(ctx, team, org, (*path, "teams", index))
    for index, key in enumerate(spec.keys):
        keys.apply_key(
            ctx, key, organization=org, team=None, project=None, path=(*path, "keys", index)
        )


def _apply_project(ctx: Context, spec: ProjectSpec, org: Organization, path: Path) -> None:
    project = ctx.upsert(
        existing=Project.objects.filter(organization=org, name=spec.name).first(),
        new=functools.partial(Project, organization=org, name=spec.name),
        values={"description": spec.description},
        kind="project",
        label=f"{org.name}/{spec.name}",
        path=path,
    )
    ctx.declared_projects.append(project)
    nested.reconcile_budgets(ctx, spec.budgets, nested.project_owner(project), (*path, "budgets"))
    for index, key in enumerate(spec.keys):
        keys.apply_key(
            ctx, key, organization=org, team=None, project=project, path=(*path, "keys", index)
        )


def _apply_team(ctx: Context, spec: TeamSpec, org: Organization, path: Path) -> None:
    team = ctx.upsert(
        existing=Team.objects.filter(organization=org, name=spec.name).first(),
        new=functools.partial(Team, organization=org, name=spec.name),
        values={"description": spec.description},
        kind="team",
        label=f"{org.name}/{spec.name}",
        path=path,
    )
    ctx.declared_teams.append(team)
    sso.reconcile_team_groups(ctx, spec.idp_groups, team, (*path, "idp_groups"))
    owner = nested.team_owner(team)
    nested.reconcile_budgets(ctx, spec.budgets, owner, (*path, "budgets"))
    nested.reconcile_rate_limit(ctx, spec.rate_limit, owner, (*path, "rate_limit"))
    nested.reconcile_model_policy(ctx, spec.models, owner, (*path, "models"))
    for index, key in enumerate(spec.keys):
        key_path = (*path, "keys", index)
        project = None
        if key.project is not None:
            project = Project.objects.filter(organization=org, name=key.project).first()
            if project is None:
                raise ctx.fail(
                    (*key_path, "project"), f"unknown project {key.project!r} in {org.name}"
                )
        keys.apply_key(ctx, key, organization=org, team=team, project=project, path=key_path)
    signin.reconcile_team(ctx, spec, team, path)
