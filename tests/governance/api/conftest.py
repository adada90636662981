"""Two organizations, a user with an API token for each role, and a client per user."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import User
from django.test import Client

from governance.actors import Actor
from governance.models import Membership, Organization, Role, Team
from governance.services import tokens
from tests.roles import World, two_organizations

UserModel = get_user_model()
_seq = itertools.count(1)


class Api:
    """A Django test client that sends one user's API token and speaks JSON."""

    def __init__(self, secret: str | None) -> None:
        self.client = Client()
        self.secret = secret

    def _headers(self, headers: dict[str, str] | None) -> dict[str, str]:
        sent = dict(headers or {})
        if self.secret is not None:
            sent.setdefault("Authorization", f"Bearer {self.secret}")
        return sent

    def get(self, path: str, params: dict[str, Any] | None = None, **headers: str) -> Any:
        return self.client.get(path, params or {}, headers=self._headers(headers))

    def _send(self, method: str, path: str, body: Any, headers: dict[str, str]) -> Any:
        send = getattr(self.client, method)
        data = json.dumps(body) if body is not None else ""
        return send(path, data, content_type="application/json", headers=self._headers(headers))

    def post(self, path: str, body: Any = None, **headers: str) -> Any:
        return self._send("post", path, body if body is not None else {}, headers)

    def patch(self, path: str, body: Any, **headers: str) -> Any:
        return self._send("patch", path, body, headers)

    def put(self, path: str, body: Any, **headers: str) -> Any:
        return self._send("put", path, body, headers)

    def delete(self, path: str, **headers: str) -> Any:
        return self._send("delete", path, None, headers)


@pytest.fixture
def world() -> World:
    return two_organizations()


def make_user(
    role: Role | None = None,
    organization: Organization | None = None,
    teams: tuple[Team, ...] = (),
    *,
    superuser: bool = False,
) -> User:
    name = f"{role or ('root' if superuser else 'nobody')}-{next(_seq)}"
    if superuser:
        return UserModel.objects.create_superuser(name, password=None)
    user = UserModel.objects.create_user(name)
    if role is not None:
        membership = Membership.objects.create(user=user, organization=organization, role=role)
        membership.teams.set(teams)
    return UserModel.objects.get(pk=user.pk)


def api_for(user: User) -> Api:
    issued = tokens.create_token(actor=Actor.system("tests"), user=user, name="tests")
    return Api(issued.secret)


MakeApi = Callable[..., Api]


@pytest.fixture
def as_role(world: World) -> MakeApi:
    """`as_role(Role.FINANCE, world.acme)` -> an Api client of a new user with that role."""

    def make(
        role: Role | None = None,
        organization: Organization | None = None,
        teams: tuple[Team, ...] = (),
        *,
        superuser: bool = False,
    ) -> Api:
        return api_for(make_user(role, organization, teams, superuser=superuser))

    return make


@pytest.fixture
def root(as_role: MakeApi) -> Api:
    return as_role(superuser=True)


@pytest.fixture
def acme_admin(as_role: MakeApi, world: World) -> Api:
    return as_role(Role.PLATFORM_ADMIN, world.acme)
