"""Users holding gateway roles, made through the membership service like an admin makes them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.contrib.auth import get_user_model

from governance.models import Membership, Organization, Role, Team, VirtualKey
from governance.services import memberships
from tests import factories
from tests.factories import TEST_ACTOR

PASSWORD = "role-test-password-1"


def member(
    username: str,
    role: Role,
    organization: Organization | None = None,
    teams: tuple[Team, ...] = (),
) -> Any:
    """A user with `role` in `organization` (None: every organization), leading `teams`."""
    user_model = get_user_model()
    user = user_model.objects.filter(username=username).first()
    if user is None:
        user = user_model.objects.create_user(username=username, password=PASSWORD)
    memberships.save_membership(
        actor=TEST_ACTOR,
        membership=Membership(user=user, organization=organization, role=role),
        teams=list(teams),
    )
    return user_model.objects.get(pk=user.pk)


@dataclass
class World:
    """Two organizations: acme (teams backend and ml) and globex (team rival), a key each."""

    acme: Organization
    globex: Organization
    backend: Team
    ml: Team
    rival: Team
    backend_key: VirtualKey
    ml_key: VirtualKey
    rival_key: VirtualKey


def two_organizations() -> World:
    acme = factories.organization(name="acme")
    globex = factories.organization(name="globex")
    backend = factories.team(organization=acme, name="backend")
    ml = factories.team(organization=acme, name="ml")
    rival = factories.team(organization=globex, name="rival")
    return World(
        acme,
        globex,
        backend,
        ml,
        rival,
        factories.virtual_key(team=backend, name="vk-backend"),
        factories.virtual_key(team=ml, name="vk-ml"),
        factories.virtual_key(team=rival, name="vk-rival"),
    )
