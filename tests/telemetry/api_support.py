"""Users with roles and their API tokens, for the report, Admin API and self-service tests."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from django.contrib.auth import get_user_model

from governance.actors import Actor
from governance.models import Membership, Organization, Role, Team, VirtualKey
from governance.services import tokens
from tests import factories

ACTOR = Actor.system("tests")
_seq = itertools.count(1)


def token_for(
    role: Role | None,
    organization: Organization | None = None,
    *,
    teams: tuple[Team, ...] = (),
    superuser: bool = False,
) -> str:
    """The secret of an API token whose user holds `role` in `organization` (None: in every
    organization); no role at all when `role` is None."""
    users = get_user_model().objects
    name = f"user-{next(_seq)}"
    user = users.create_superuser(name, password=None) if superuser else users.create_user(name)
    if role is not None:
        membership = Membership.objects.create(user=user, organization=organization, role=role)
        membership.teams.set(teams)
    return tokens.create_token(actor=ACTOR, user=user, name="tests").secret


@dataclass
class World:
    """Two organizations: acme (teams backend and ml, a project, keys and a sub-key) and
    globex (team rival)."""

    acme: Organization
    globex: Organization
    backend: Team
    ml: Team
    rival: Team
    backend_key: VirtualKey
    alice: VirtualKey  # a developer sub-key of backend_key
    ml_key: VirtualKey
    rival_key: VirtualKey
    backend_secret: str
    alice_secret: str
    ml_secret: str


def world() -> World:
    acme = factories.organization(name="acme")
    globex = factories.organization(name="globex")
    backend = factories.team(organization=acme, name="backend")
    ml = factories.team(organization=acme, name="ml")
    rival = factories.team(organization=globex, name="rival")
    backend_key = factories.issued_key(team=backend, name="vk-backend", owner="ops@acme.dev")
    alice = factories.issued_key(parent=backend_key.key, name="alice", owner="alice@acme.dev")
    ml_key = factories.issued_key(team=ml, name="vk-ml")
    rival_key = factories.virtual_key(team=rival, name="vk-rival")
    return World(
        acme,
        globex,
        backend,
        ml,
        rival,
        backend_key.key,
        alice.key,
        ml_key.key,
        rival_key,
        backend_key.secret,
        alice.secret,
        ml_key.secret,
    )
