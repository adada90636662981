"""Providers, model routes, MCP servers and MCP tool grants."""

from __future__ import annotations

import functools
from collections import defaultdict
from typing import TypeVar

from django.db.models import Q

from governance.config.context import Context
from governance.config.errors import Path
from governance.config.schema import MCPGrantSpec, MCPServerSpec, ProviderSpec, RouteSpec
from governance.models import (
    Deployment,
    MCPServer,
    MCPToolGrant,
    ModelRoute,
    Provider,
    Team,
    VirtualKey,
)
from governance.services import providers as provider_service

T = TypeVar("T", Team, VirtualKey)


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
    ctx.upsert(
        existing=MCPServer.objects.filter(name=spec.name).first(),
        new=functools.partial(MCPServer, name=spec.name),
        values={"url": spec.url, "code_mode": spec.code_mode, "enabled": spec.enabled},
        kind="MCP server",
        label=spec.name,
        path=path,
    )


def apply_grants(ctx: Context, specs: list[MCPGrantSpec]) -> None:
    """Grants are complete per owner: for every team and key the file declares or a grant
    names, grants the file does not list are deleted."""
    kept: set[int] = set()
    teams = {team.pk for team in ctx.declared_teams}
    keys = {key.pk for key in ctx.declared_keys}
    for index, spec in enumerate(specs):
        path = ("mcp_grants", index)
        server = MCPServer.objects.filter(name=spec.server).first()
        if server is None:
            raise ctx.fail((*path, "server"), f"unknown MCP server {spec.server!r}")
        if spec.team is not None:
            team = _grant_team(ctx, spec, spec.team, path)
            owned: dict[str, Team | VirtualKey] = {"team": team}
            label = f"team {team} on {server.name}"
            teams.add(team.pk)
        else:
            key = _grant_key(ctx, spec, str(spec.key), path)
            owned = {"virtual_key": key}
            label = f"key {key.organization.name}/{key} on {server.name}"
            keys.add(key.pk)
        grant = ctx.upsert(
            existing=MCPToolGrant.objects.filter(server=server, **owned).first(),
            new=functools.partial(MCPToolGrant, server=server, **owned),
            values={"tool_patterns": list(spec.tools)},
            kind="MCP grant",
            label=label,
            path=path,
        )
        kept.add(grant.pk)
    stale = MCPToolGrant.objects.filter(Q(team__in=teams) | Q(virtual_key__in=keys))
    for grant in stale.exclude(pk__in=kept).select_related("server", "team", "virtual_key"):
        owner = f"team {grant.team}" if grant.team else f"key {grant.virtual_key}"
        ctx.delete(grant, kind="MCP grant", label=f"{owner} on {grant.server.name}")


def _grant_team(ctx: Context, spec: MCPGrantSpec, name: str, path: Path) -> Team:
    found = Team.objects.filter(name=name).select_related("organization")
    if spec.organization is not None:
        found = found.filter(organization__name=spec.organization)
    return _single(ctx, list(found), f"team {name!r}", (*path, "team"))


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
