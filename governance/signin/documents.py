"""The managed-settings document of a team, from its organization's base layer and the team's
own (governance/managed_settings.py merges them; this module only reads the rows)."""

from __future__ import annotations

from typing import Any

from governance import managed_settings
from governance.models import OrganizationSignIn, TeamSignIn


def team_document(*, organization_id: int, team_id: int | None) -> dict[str, Any] | None:
    """The merged document, or None when neither layer says anything ("no managed policy")."""
    base = (
        OrganizationSignIn.objects.filter(organization_id=organization_id)
        .values_list("managed_settings", flat=True)
        .first()
    )
    layer = None
    if team_id is not None:
        layer = (
            TeamSignIn.objects.filter(team_id=team_id)
            .values_list("managed_settings", flat=True)
            .first()
        )
    # An empty layer is no layer: only a document someone wrote is served.
    return managed_settings.resolve(base or None, layer or None)
