"""Who may call the API: API tokens (revoked: refused at once), staff sessions, and a role."""

from __future__ import annotations

import datetime as dt

import pytest
from django.test import Client
from django.utils import timezone

from governance.actors import Actor
from governance.models import Role
from governance.services import tokens
from tests.governance.api.conftest import Api, api_for, make_user
from tests.roles import World

pytestmark = pytest.mark.django_db
ACTOR = Actor.system("tests")
COLLECTIONS = ["organizations", "keys", "budgets", "providers", "audit-events", "api-tokens"]


def test_a_token_of_a_user_with_a_role_is_accepted(acme_admin: Api) -> None:
    assert acme_admin.get("/api/v1/keys/").status_code == 200


def test_anonymous_requests_get_401_with_a_bearer_challenge(world: World) -> None:
    response = Api(None).get("/api/v1/keys/")

    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_an_unknown_token_gets_401_without_echoing_it(world: World) -> None:
    response = Api("gwapi-not-a-real-token").get("/api/v1/keys/")

    assert response.status_code == 401
    assert "gwapi-not-a-real-token" not in response.content.decode()


def test_a_revoked_token_is_refused_on_the_next_request(world: World) -> None:
    user = make_user(Role.PLATFORM_ADMIN, world.acme)
    issued = tokens.create_token(actor=ACTOR, user=user, name="ci")
    api = Api(issued.secret)
    assert api.get("/api/v1/keys/").status_code == 200

    tokens.revoke_token(actor=ACTOR, token=issued.token)

    assert api.get("/api/v1/keys/").status_code == 401


def test_a_token_revoked_through_the_api_stops_working_at_once(world: World) -> None:
    api = api_for(make_user(Role.FINANCE, world.acme))
    mine = api.get("/api/v1/api-tokens/").json()["results"][0]

    assert api.post(f"/api/v1/api-tokens/{mine['id']}/revoke/").status_code == 200
    assert api.get("/api/v1/api-tokens/").status_code == 401


def test_an_expired_token_is_refused(world: World) -> None:
    user = make_user(Role.PLATFORM_ADMIN, world.acme)
    issued = tokens.create_token(
        actor=ACTOR, user=user, name="old", expires_at=timezone.now() - dt.timedelta(seconds=1)
    )

    assert Api(issued.secret).get("/api/v1/keys/").status_code == 401


@pytest.mark.parametrize("collection", COLLECTIONS)
def test_a_user_without_a_role_gets_403_on_everything(world: World, collection: str) -> None:
    api = api_for(make_user())

    assert api.get(f"/api/v1/{collection}/").status_code == 403
    assert api.post(f"/api/v1/{collection}/", {"name": "x"}).status_code == 403
    assert api.get(f"/api/v1/keys/{world.backend_key.pk}/").status_code == 403


def test_a_staff_session_with_a_role_uses_the_browsable_api(world: World) -> None:
    user = make_user(Role.PLATFORM_ADMIN, world.acme)
    user.is_staff = True
    user.save()
    client = Client()
    client.force_login(user)

    response = client.get("/api/v1/keys/", headers={"Accept": "text/html"})

    assert response.status_code == 200
    assert b"vk-backend" in response.content


def test_a_session_of_a_user_who_is_not_staff_is_refused(world: World) -> None:
    user = make_user(Role.PLATFORM_ADMIN, world.acme)
    user.is_staff = False
    user.save()
    client = Client()
    client.force_login(user)

    assert client.get("/api/v1/keys/").status_code == 403


def test_session_writes_need_the_csrf_token(world: World) -> None:
    user = make_user(superuser=True)
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)

    response = client.post(
        "/api/v1/teams/", {"organization": world.acme.pk, "name": "x"}, "application/json"
    )

    assert response.status_code == 403
    assert "CSRF" in response.json()["detail"]


def test_the_schema_and_docs_need_a_role_or_staff(world: World) -> None:
    with_role = api_for(make_user(Role.AUDITOR, world.acme))
    without = api_for(make_user())

    schema = with_role.get("/api/schema/", {"format": "json"})
    assert schema.status_code == 200
    assert "/api/v1/keys/" in schema.json()["paths"]
    assert with_role.get("/api/docs/").status_code == 200
    assert without.get("/api/schema/").status_code == 403
    assert Api(None).get("/api/docs/").status_code == 401
