"""Providers, model routes, MCP servers (with their tool prices) and MCP tool grants."""

from __future__ import annotations

import functools
from collections import defaultdict
from typing import TypeVar

from django.core.exceptions import ValidationError
from django.db.models import Q

from governance.config.context import Context
from governance.config.errors import Path
from governance.config.schema import MCPGrantSpec, MCPServerSpec, ProviderSpec, RouteSpec
from governance.models import (
    Deployment,
    MCPServer,
    MCPToolGrant,
    MCPToolPrice,
    ModelRoute,
    Organization,
    Project,
    Provider,
    Team,
    VirtualKey,
)
from governance.models.tools import check_header_name
from governance.services import mcp as mcp_service
from governance.services import providers as provider_service

T = TypeVar("T", Team, Project, VirtualKey)


def apply_provider(ctx: Context, spec: ProviderSpec, path: Path) -> None:
    existing = Provider.objects.filter(name=spec.name).first()
    credentials = spec.credential_values()
    names = ", ".join(sorted(credentials))
    if existing is not None and not credentials:
        # Credentials in the file replace every stored one; none keeps them all, so they
        # would follow a new base URL.
        with ctx.pointing_at(path):
            provider_service.check_base_url_change(existing, base_url=spec.base_url)
    provider = ctx.upsert(
        existing=existing,
        new=functools.partial(Provider, name=spec.name),
        values={
            "kind": spec.kind,
            "base_url": spec.base_url,
            "region": spec.region,
            "settings": dict(spec.settings),
            "enabled": spec.enabled,
        },
        kind="provider",
        label=spec.name,
        path=path,
        detail=f"credentials: {names}" if credentials else "",
    )
    # No credential in the file (e.g. an unset `${VAR:-}`) leaves the stored ones alone, so
    # a run without the secrets in its environment cannot wipe them.
    if not credentials:
        return
    with ctx.pointing_at(path):
        wrote = provider_service.set_credentials(
            actor=ctx.actor, provider=provider, credentials=credentials
        )
    if wrote and existing is not None:
        ctx.log.updated("provider", spec.name, f"credentials replaced ({names})")


def apply_route(ctx: Context, spec: RouteSpec, path: Path) -> None:
    route = ctx.upsert(
        existing=ModelRoute.objects.filter(public_name=spec.name).first(),
        new=functools.partial(ModelRoute, public_name=spec.name),
        values={"description": spec.description},
        kind="model",
        label=spec.name,
        path=path,
    )
    stored: dict[tuple[int, str], list[Deployment]] = defaultdict(list)
    for deployment in route.deployments.order_by("position", "id"):
        stored[(deployment.provider_id, deployment.upstream_model)].append(deployment)
    for index, item in enumerate(spec.deployments):
        item_path = (*path, "deployments", index)
        provider = Provider.objects.filter(name=item.provider).first()
        if provider is None:
            raise ctx.fail(
                (*item_path, "provider"),
                f"unknown provider {item.provider!r} (not in providers: nor in the database)",
            )
        matches = stored.get((provider.pk, item.model))
        ctx.upsert(
            existing=matches.pop(0) if matches else None,
            new=functools.partial(
                Deployment, route=route, provider=provider, upstream_model=item.model
            ),
            values={
                # List order is failover order unless a position is given explicitly.
                "position": index if item.position is None else item.position,
                "weight": item.weight,
                "enabled": item.enabled,
            },
            kind="deployment",
            label=f"{spec.name} -> {item.provider}:{item.model}",
            path=item_path,
        )
    for leftovers in stored.values():
        for deployment in leftovers:
            label = f"{spec.name} -> {deployment.provider.name}:{deployment.upstream_model}"
            ctx.delete(deployment, kind="deployment", label=label)


def apply_mcp_server(ctx: Context, spec: MCPServerSpec, path: Path) -> None:
    existing = MCPServer.objects.filter(name=spec.name).first()
    headers, secret_env = spec.credential_values()
    for name in spec.headers:  # the schema checked the names' syntax
        try:
            check_header_name(name)
        except ValidationError as exc:
            raise ctx.fail((*path, "headers", name), exc.messages[0]) from None
    credentials = mcp_service.checked_credentials(headers=headers, env=secret_env)
    names = ", ".join(mcp_service.credential_label(name) for name in sorted(credentials))
    if existing is not None and not credentials:
        # Credentials in the file replace every stored one; none keeps them all, so they
        # would follow a new URL or command.
        with ctx.pointing_at(path):
            mcp_service.check_destination_change(existing, destination=spec.destination)
    server = ctx.upsert(
        existing=existing,
        new=functools.partial(MCPServer, name=spec.name),
        values={
            "transport": spec.kind,
            "url": spec.url,
            "command": spec.command,
            "args": list(spec.args),
            "env": dict(spec.env),
            "timeout_seconds": spec.timeout_seconds,
            "code_mode": spec.code_mode,
            "price_per_call_micros": spec.per_call_micros,
            "price_per_kb_micros": spec.per_kb_micros,
            "enabled": spec.enabled,
        },
        kind="MCP server",
        label=spec.name,
        path=path,
        detail=f"credentials: {names}" if credentials else "",
    )
    _reconcile_tool_prices(ctx, spec, server, (*path, "tool_prices"))
    # No credential in the file (e.g. an unset `${VAR:-}`) leaves the stored ones alone, so
    # a run without the secrets in its environment cannot wipe them.
    if not credentials:
        return
    with ctx.pointing_at(path):
        wrote = mcp_service.set_credentials(actor=ctx.actor, server=server, credentials=credentials)
    if wrote and existing is not None:
        ctx.log.updated("MCP server", spec.name, f"credentials replaced ({names})")


def _reconcile_tool_prices(
    ctx: Context, spec: MCPServerSpec, server: MCPServer, path: Path
) -> None:
    stored = {price.tool_pattern: price for price in server.tool_prices.order_by("id")}
    for position, item in enumerate(spec.tool_prices):
        ctx.upsert(
            existing=stored.pop(item.tool, None),
            new=functools.partial(MCPToolPrice, server=server, tool_pattern=item.tool),
            values={
                "per_call_micros": item.per_call_micros,
                "per_kb_micros": item.per_kb_micros,
                # List order is match order.
                "position": position,
            },
            kind="MCP tool price",
            label=f"{server.name}: {item.tool}",
            path=(*path, position),
        )
    for leftover in stored.values():
        ctx.delete(leftover, kind="MCP tool price", label=f"{server.name}: {leftover.tool_pattern}")


def apply_grants(ctx: Context, specs: list[MCPGrantSpec]) -> None:
    """Grants are complete per owner: for every organization, team, project and key the file
    declares or a grant names, grants the file does not list are deleted."""
    kept: dict[int, Path] = {}
    owners: dict[str, set[int]] = {
        "organization": {org.pk for org in ctx.declared_organizations},
        "team": {team.pk for team in ctx.declared_teams},
        "project": {project.pk for project in ctx.declared_projects},
        "virtual_key": {key.pk for key in ctx.declared_keys},
    }
    for index, spec in enumerate(specs):
        path = ("mcp_grants", index)
        server = MCPServer.objects.filter(name=spec.server).first()
        if server is None:
            raise ctx.fail((*path, "server"), f"unknown MCP server {spec.server!r}")
        field, owner, label = _grant_owner(ctx, spec, path)
        owners[field].add(owner.pk)
        grant = ctx.upsert(
            existing=MCPToolGrant.objects.filter(server=server, **{field: owner}).first(),
            new=functools.partial(MCPToolGrant, server=server, **{field: owner}),
            values={"tool_patterns": list(spec.tools), "denied_patterns": list(spec.deny)},
            kind="MCP grant",
            label=f"{label} on {server.name}",
            path=path,
        )
        if grant.pk in kept:
            raise ctx.fail(
                path, f"this grant appears twice (first at mcp_grants[{kept[grant.pk][1]}])"
            )
        kept[grant.pk] = path
    stale = MCPToolGrant.objects.filter(
        Q(organization__in=owners["organization"])
        | Q(team__in=owners["team"])
        | Q(project__in=owners["project"])
        | Q(virtual_key__in=owners["virtual_key"])
    )
    related = ("server", "organization", "team", "project", "virtual_key__parent")
    for grant in stale.exclude(pk__in=kept).select_related(*related):
        ctx.delete(grant, kind="MCP grant", label=f"{grant.owner_label} on {grant.server.name}")


Owner = Organization | Team | Project | VirtualKey


def _grant_owner(ctx: Context, spec: MCPGrantSpec, path: Path) -> tuple[str, Owner, str]:
    """(MCPToolGrant field, owner, label) of the grant `spec` describes."""
    if spec.team is not None:
        team = _named(ctx, spec, Team, spec.team, (*path, "team"))
        return "team", team, f"team {team}"
    if spec.project is not None:
        project = _named(ctx, spec, Project, spec.project, (*path, "project"))
        return "project", project, f"project {project}"
    if spec.key is not None:
        key = _grant_key(ctx, spec, spec.key, path)
        return "virtual_key", key, f"key {key.organization.name}/{key}"
    org = Organization.objects.filter(name=spec.organization).first()
    if org is None:
        raise ctx.fail(
            (*path, "organization"),
            f"unknown organization {spec.organization!r} (not in the file nor in the database)",
        )
    return "organization", org, f"organization {org.name}"


def _named(ctx: Context, spec: MCPGrantSpec, model: type[T], name: str, path: Path) -> T:
    found = model._default_manager.filter(name=name).select_related("organization")
    if spec.organization is not None:
        found = found.filter(organization__name=spec.organization)
    return _single(ctx, list(found), f"{model._meta.verbose_name} {name!r}", path)


def _grant_key(ctx: Context, spec: MCPGrantSpec, name: str, path: Path) -> VirtualKey:
    # "vk-backend" names a key, "vk-backend/alice" one of its sub-keys.
    parent_name, _, sub_name = name.rpartition("/")
    if parent_name:
        found = VirtualKey.objects.filter(
            parent__name=parent_name, parent__parent__isnull=True, name=sub_name
        )
    else:
        found = VirtualKey.objects.filter(parent__isnull=True, name=name)
    if spec.organization is not None:
        found = found.filter(organization__name=spec.organization)
    keys = list(found.select_related("organization", "parent"))
    return _single(ctx, keys, f"key {name!r}", (*path, "key"))


def _single(ctx: Context, found: list[T], what: str, path: Path) -> T:
    if not found:
        raise ctx.fail(path, f"unknown {what} (not in the file nor in the database)")
    if len(found) > 1:
        orgs = ", ".join(sorted({str(item.organization.name) for item in found}))
        raise ctx.fail(path, f"{what} exists in several organizations ({orgs}): add organization:")
    return found[0]
