"""Reads for the admin, the API and the policy loader (select_related lives here)."""

from __future__ import annotations

import hmac
from collections.abc import Iterable

from django.db.models import Q, QuerySet
from django.utils import timezone

from governance.models import (
    Budget,
    Deployment,
    MCPServer,
    MCPToolGrant,
    ModelPolicy,
    ModelPrice,
    Provider,
    RateLimit,
    VirtualKey,
)


def key_by_lookup_hash(lookup_hash: str) -> tuple[VirtualKey, bool] | None:
    """The key whose current (or, within its grace period, previous) secret hashes to this.

    Returns (key, via_previous_secret). The database index finds the row; the final
    comparison is constant-time so a near-miss cannot be told from a miss by timing.
    """
    now = timezone.now()
    key = (
        VirtualKey.objects.select_related(
            "organization", "team", "project", "parent", "parent__team", "parent__project"
        )
        .filter(
            Q(lookup_hash=lookup_hash)
            | Q(previous_lookup_hash=lookup_hash, previous_valid_until__gt=now)
        )
        .first()
    )
    if key is None:
        return None
    if hmac.compare_digest(key.lookup_hash, lookup_hash):
        return key, False
    if key.previous_lookup_hash and hmac.compare_digest(key.previous_lookup_hash, lookup_hash):
        return key, True
    return None


def budgets_for_chain(
    *, key_ids: Iterable[int], team_id: int | None, project_id: int | None, organization_id: int
) -> QuerySet[Budget]:
    owners = Q(virtual_key_id__in=list(key_ids)) | Q(
        organization_id=organization_id,
        team__isnull=True,
        project__isnull=True,
        virtual_key__isnull=True,
    )
    if team_id is not None:
        owners |= Q(team_id=team_id)
    if project_id is not None:
        owners |= Q(project_id=project_id)
    return Budget.objects.filter(owners).select_related("team", "project", "virtual_key")


def rate_limits_for_chain(*, key_ids: Iterable[int], team_id: int | None) -> QuerySet[RateLimit]:
    owners = Q(virtual_key_id__in=list(key_ids))
    if team_id is not None:
        owners |= Q(team_id=team_id)
    return RateLimit.objects.filter(owners).select_related("team", "virtual_key")


def model_policies_for_chain(
    *, key_ids: Iterable[int], team_id: int | None
) -> QuerySet[ModelPolicy]:
    owners = Q(virtual_key_id__in=list(key_ids))
    if team_id is not None:
        owners |= Q(team_id=team_id)
    return ModelPolicy.objects.filter(owners).select_related("team", "virtual_key")


def enabled_deployments() -> QuerySet[Deployment]:
    return (
        Deployment.objects.filter(enabled=True, provider__enabled=True)
        .select_related("route", "provider")
        .order_by("route__public_name", "position", "id")
    )


def enabled_providers() -> QuerySet[Provider]:
    return Provider.objects.filter(enabled=True).order_by("name")


def all_prices() -> QuerySet[ModelPrice]:
    return ModelPrice.objects.all()


def tool_grants_for_chain(
    *, key_ids: Iterable[int], team_id: int | None, project_id: int | None, organization_id: int
) -> QuerySet[MCPToolGrant]:
    """MCP grants of a key's chain on enabled servers: the key and its parent, its team and
    project, its organization."""
    owners = Q(virtual_key_id__in=list(key_ids)) | Q(organization_id=organization_id)
    if team_id is not None:
        owners |= Q(team_id=team_id)
    if project_id is not None:
        owners |= Q(project_id=project_id)
    return (
        MCPToolGrant.objects.filter(owners, server__enabled=True)
        .select_related(
            "server", "organization", "team", "project", "virtual_key", "virtual_key__parent"
        )
        .order_by("id")
    )


def enabled_mcp_servers() -> QuerySet[MCPServer]:
    return MCPServer.objects.filter(enabled=True).prefetch_related("tool_prices").order_by("name")
