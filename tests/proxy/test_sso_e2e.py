"""Single sign-on end to end: a real gateway (uvicorn, in a thread) configured from GATEWAY_OIDC_*
against the project's local OIDC provider, driven as a browser would be (httpx following
redirects and keeping cookies): /admin/ -> login page -> "Sign in with SSO" -> provider ->
callback -> signed in, with the roles the groups claim maps to."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from governance.actors import Actor
from governance.models import IdpGroupRole, Membership, OIDCIdentity, Role, TeamIdpGroup
from governance.services import common
from tests import factories
from tests.fakes.oidc_provider import FakeOIDCProvider, s256
from tests.proxy.conftest import GatewayServer, start_gateway
from tests.sso_support import csrf_token, query, turn_sso_on

pytestmark = pytest.mark.django_db(transaction=True)
ACTOR = Actor.system("tests")
SSO_LINK = re.compile(r'href="(/sso/start/\?next=[^"]*)"')


@pytest.fixture
def idp() -> Iterator[FakeOIDCProvider]:
    with FakeOIDCProvider() as provider:
        yield provider


@pytest.fixture
def sso_gateway(settings: Any, tmp_path: Any, idp: FakeOIDCProvider) -> Iterator[GatewayServer]:
    """A gateway with single sign-on on. Its port is known only once it runs; the settings
    are read per request, so they are set right after the start."""
    settings.GATEWAY_SPOOL_DIR = str(tmp_path / "spool")
    server = start_gateway()
    turn_sso_on(settings, idp, gateway_url=server.base_url)
    yield server
    server.stop()


@pytest.fixture
def plain_gateway(settings: Any, tmp_path: Any) -> Iterator[GatewayServer]:
    settings.GATEWAY_SPOOL_DIR = str(tmp_path / "spool")
    server = start_gateway()
    yield server
    server.stop()


def browser(gateway: GatewayServer) -> httpx.Client:
    return httpx.Client(base_url=gateway.base_url, follow_redirects=True, timeout=20)


def mapped_organization() -> None:
    acme = factories.organization(name="acme")
    backend = factories.team(organization=acme, name="backend")
    factories.team(organization=acme, name="ml")
    for role, group in [
        (Role.PLATFORM_ADMIN, "gw-admins"),
        (Role.FINANCE, "finops"),
        (Role.TEAM_LEAD, "leads"),
    ]:
        common.save_instance(IdpGroupRole(organization=acme, role=role, group=group), actor=ACTOR)
    common.save_instance(TeamIdpGroup(team=backend, group="eng-backend"), actor=ACTOR)


def roles(subject: str) -> set[tuple[str, str, tuple[str, ...]]]:
    user = OIDCIdentity.objects.get(subject=subject).user
    return {
        (
            m.organization.name if m.organization else "*",
            m.role,
            tuple(t.name for t in m.teams.all()),
        )
        for m in Membership.objects.filter(user=user, source="oidc")
    }


def sign_in_through_sso(client: httpx.Client, start: str = "/admin/") -> httpx.Response:
    """Open `start` signed out, follow to the login page, click "Sign in with SSO"."""
    login_page = client.get(start)
    assert "/admin/login/" in str(login_page.url)
    match = SSO_LINK.search(login_page.text)
    assert match, "the login page has no SSO button"
    return client.get(match.group(1).replace("&amp;", "&"))


def test_admin_sign_in_through_sso_grants_the_mapped_roles_and_replaces_them_next_time(
    sso_gateway: GatewayServer, idp: FakeOIDCProvider
) -> None:
    mapped_organization()
    idp.add_user("00u-grace", email="grace@acme.dev", groups=["gw-admins", "leads", "eng-backend"])
    idp.sign_in_as("00u-grace")

    with browser(sso_gateway) as client:
        landed = sign_in_through_sso(client)
        assert landed.status_code == 200
        assert str(landed.url) == f"{sso_gateway.base_url}/admin/"
        assert "Governance" in landed.text and "grace@acme.dev" in landed.text
        hops = [str(r.url) for r in landed.history]
        assert any(h.startswith(f"{idp.issuer}/authorize?") for h in hops)
        assert any(h.startswith(f"{sso_gateway.base_url}/sso/callback/?") for h in hops)

    assert roles("00u-grace") == {
        ("acme", "platform_admin", ()),
        ("acme", "team_lead", ("backend",)),
    }
    # PKCE: the challenge sent to /authorize matches the verifier sent to /token.
    [authorization] = idp.requests_to("/authorize")
    [exchange] = idp.requests_to("/token")
    assert authorization.query["code_challenge_method"] == "S256"
    assert s256(exchange.form["code_verifier"]) == authorization.query["code_challenge"]

    # The IdP moves Grace to finance: her next sign-in replaces the roles.
    idp.user("00u-grace").groups = ["finops"]
    with browser(sso_gateway) as client:
        landed = sign_in_through_sso(client, "/dashboards/spend")
        assert landed.status_code == 200
        assert str(landed.url) == f"{sso_gateway.base_url}/dashboards/spend"
    assert roles("00u-grace") == {("acme", "finance", ())}


def test_tampered_state_fails_end_to_end(sso_gateway: GatewayServer, idp: FakeOIDCProvider) -> None:
    mapped_organization()
    idp.add_user("00u-eve", email="eve@acme.dev", groups=["gw-admins"])
    idp.sign_in_as("00u-eve")

    with httpx.Client(base_url=sso_gateway.base_url, timeout=20) as client:
        to_idp = client.get("/sso/start/?next=/admin/")
        assert to_idp.status_code == 302
        back = httpx.get(to_idp.headers["location"], timeout=20)
        answer = query(back.headers["location"])

        forged = client.get("/sso/callback/", params={"code": answer["code"], "state": "forged"})
        assert forged.status_code == 400
        assert client.get("/admin/").status_code == 302  # still signed out

    assert not OIDCIdentity.objects.exists()
    assert idp.requests_to("/token") == []


def test_stolen_code_is_useless_without_the_sessions_pkce_verifier(
    sso_gateway: GatewayServer, idp: FakeOIDCProvider
) -> None:
    mapped_organization()
    idp.add_user("00u-victim", email="victim@acme.dev", groups=["gw-admins"])
    idp.sign_in_as("00u-victim")
    with httpx.Client(base_url=sso_gateway.base_url, timeout=20) as victim:
        to_idp = victim.get("/sso/start/").headers["location"]
        back = httpx.get(to_idp, timeout=20)
        stolen = query(back.headers["location"])["code"]

    with httpx.Client(base_url=sso_gateway.base_url, timeout=20) as attacker:
        own = query(attacker.get("/sso/start/").headers["location"])
        replay = attacker.get("/sso/callback/", params={"code": stolen, "state": own["state"]})
        assert replay.status_code == 302 and "/admin/login/" in replay.headers["location"]
        assert attacker.get("/admin/").status_code == 302

    # The gateway sent the attacker's session's verifier, which the victim's code is not bound to.
    [exchange] = idp.requests_to("/token")
    assert s256(exchange.form["code_verifier"]) == own["code_challenge"]
    assert own["code_challenge"] != query(to_idp)["code_challenge"]
    assert not OIDCIdentity.objects.exists()


def test_sso_off_shows_no_sso_button_and_password_login_works(
    plain_gateway: GatewayServer,
) -> None:
    from django.contrib.auth.models import User

    User.objects.create_superuser("root", "root@example.com", "pw-for-tests-123")
    with browser(plain_gateway) as client:
        page = client.get("/admin/")
        assert "/admin/login/" in str(page.url)
        assert "Sign in with SSO" not in page.text
        assert client.get("/sso/start/").status_code == 404
        signed_in = client.post(
            "/admin/login/?next=/admin/",
            data={
                "csrfmiddlewaretoken": csrf_token(page.text),
                "username": "root",
                "password": "pw-for-tests-123",
                "next": "/admin/",
            },
        )
        assert signed_in.status_code == 200
        assert str(signed_in.url) == f"{plain_gateway.base_url}/admin/"
        assert "Governance" in signed_in.text
