"""Virtual keys from the file: created once, updated in place, rotated when an imported secret
changes. A generated secret is handed back exactly once, on the run that creates the key."""

from __future__ import annotations

from governance.config import nested
from governance.config.context import Context
from governance.config.errors import Path
from governance.config.schema import KeySpec, SubKeySpec
from governance.models import Organization, Project, Team, VirtualKey
from governance.services import common
from governance.services import keys as key_service


def apply_key(
    ctx: Context,
    spec: SubKeySpec,
    *,
    organization: Organization,
    team: Team | None,
    project: Project | None,
    path: Path,
    parent: VirtualKey | None = None,
) -> None:
    if parent is not None:  # a sub-key is always held to its parent's team and project
        team, project = parent.team, parent.project
    label = (
        f"{organization.name}/{spec.name}"
        if parent is None
        else f"{organization.name}/{parent.name}/{spec.name}"
    )
    existing = VirtualKey.objects.filter(
        organization=organization, parent=parent, name=spec.name
    ).first()
    if existing is not None and existing.revoked_at is not None:
        # Revoking is a deliberate security action; the file must not bring a key back.
        ctx.log.warn(f"key {label} is revoked: left as it is (rename it to issue a new key)")
        return
    if existing is None:
        key = _create(
            ctx,
            spec,
            organization=organization,
            team=team,
            project=project,
            parent=parent,
            label=label,
            path=path,
        )
    else:
        key = _update(
            ctx, spec, existing=existing, team=team, project=project, label=label, path=path
        )
    ctx.declared_keys.append(key)
    owner = nested.key_owner(key, label)
    nested.reconcile_budgets(ctx, spec.budgets, owner, (*path, "budgets"))
    nested.reconcile_rate_limit(ctx, spec.rate_limit, owner, (*path, "rate_limit"))
    nested.reconcile_model_policy(ctx, spec.models, owner, (*path, "models"))
    if isinstance(spec, KeySpec):
        for index, sub in enumerate(spec.sub_keys):
            apply_key(
                ctx,
                sub,
                organization=organization,
                team=team,
                project=project,
                parent=key,
                path=(*path, "sub_keys", index),
            )


def _create(
    ctx: Context,
    spec: SubKeySpec,
    *,
    organization: Organization,
    team: Team | None,
    project: Project | None,
    parent: VirtualKey | None,
    label: str,
    path: Path,
) -> VirtualKey:
    imported = spec.secret_value
    with ctx.pointing_at(path):
        issued = key_service.create_key(
            actor=ctx.actor,
            organization=organization,
            name=spec.name,
            team=team,
            project=project,
            parent=parent,
            owner=spec.owner,
            expires_at=spec.expires_at,
            log_content=spec.log_content,
            secret=imported or None,
        )
    if spec.mcp_code_mode != issued.key.mcp_code_mode:
        issued.key.mcp_code_mode = spec.mcp_code_mode
        with ctx.pointing_at(path):
            common.save_instance(issued.key, actor=ctx.actor)
    if imported:
        detail = "secret imported from the file"
    elif ctx.dry_run:
        detail = "a secret would be generated"
    else:
        detail = "secret generated, shown below"
        ctx.new_secrets.append((label, issued.secret))
    ctx.log.created("key", label, detail)
    return issued.key


def _update(
    ctx: Context,
    spec: SubKeySpec,
    *,
    existing: VirtualKey,
    team: Team | None,
    project: Project | None,
    label: str,
    path: Path,
) -> VirtualKey:
    key = ctx.upsert(
        existing=existing,
        new=VirtualKey,
        values={
            "owner": spec.owner,
            "expires_at": spec.expires_at,
            "log_content": spec.log_content,
            "team": team,
            "project": project,
            "mcp_code_mode": spec.mcp_code_mode,
        },
        kind="key",
        label=label,
        path=path,
    )
    imported = spec.secret_value
    if imported and key_service.hash_secret(imported) != key.lookup_hash:
        with ctx.pointing_at(path):
            key = key_service.rotate_key(actor=ctx.actor, key=key, secret=imported).key
        ctx.log.updated(
            "key", label, "secret rotated to the one in the file (the old one stops now)"
        )
    return key
