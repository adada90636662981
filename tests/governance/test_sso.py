"""Single sign-on for the admin and dashboards (governance/identity/), against the project's local
OIDC provider: the browser's steps are driven one by one with Django's test client, so each
check (state, PKCE, nonce, audience, issuer, discovery) can be tampered with on its own."""

from __future__ import annotations

import functools
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import User
from django.test import Client

from governance import config
from governance.actors import Actor
from governance.config import ConfigError
from governance.identity import oidc
from governance.models import (
    AuditEvent,
    IdpGroupRole,
    Membership,
    OIDCIdentity,
    Organization,
    Role,
    Team,
    TeamIdpGroup,
)
from governance.services import common, identities, memberships
from tests import factories
from tests.fakes.oidc_provider import FakeOIDCProvider, s256
from tests.governance.test_admin import form_data
from tests.sso_support import (
    CLIENT_ID,
    authorize,
    path_and_query,
    query,
    turn_sso_on,
)

pytestmark = pytest.mark.django_db
ACTOR = Actor.system("tests")
TESTSERVER = "http://testserver"


@pytest.fixture
def idp() -> Iterator[FakeOIDCProvider]:
    with FakeOIDCProvider() as provider:
        yield provider


@pytest.fixture
def sso(settings: Any, idp: FakeOIDCProvider) -> FakeOIDCProvider:
    turn_sso_on(settings, idp, gateway_url=TESTSERVER)
    return idp


@pytest.fixture
def acme() -> Organization:
    org = factories.organization(name="acme")
    backend = factories.team(organization=org, name="backend")
    factories.team(organization=org, name="ml")
    for role, group in [
        (Role.PLATFORM_ADMIN, "gw-admins"),
        (Role.FINANCE, "finops"),
        (Role.TEAM_LEAD, "leads"),
        (Role.AUDITOR, "audit"),
    ]:
        common.save_instance(IdpGroupRole(organization=org, role=role, group=group), actor=ACTOR)
    common.save_instance(TeamIdpGroup(team=backend, group="eng-backend"), actor=ACTOR)
    return org


def start(client: Client, next_url: str = "/admin/") -> str:
    """The gateway's redirect to the provider's authorization endpoint."""
    response = client.get("/sso/start/", {"next": next_url})
    assert response.status_code == 302
    return str(response["Location"])


def sign_in(client: Client, next_url: str = "/admin/") -> Any:
    """The whole browser round trip; the callback's response."""
    callback = authorize(start(client, next_url))
    return client.get(path_and_query(callback))


def roles_of(user: Any) -> set[tuple[str | None, str, tuple[str, ...]]]:
    return {
        (
            m.organization.name if m.organization else None,
            m.role,
            tuple(sorted(t.name for t in m.teams.all())),
        )
        for m in Membership.objects.filter(user=user)
    }


# --- SSO off: today's behaviour --------------------------------------------------------------


def test_sso_off_login_page_has_no_sso_button_and_password_login_works(client: Client) -> None:
    User.objects.create_superuser("root", "root@example.com", "pw-for-tests-123")

    page = client.get("/admin/login/?next=/admin/")
    assert page.status_code == 200
    assert b"Sign in with SSO" not in page.content

    response = client.post(
        "/admin/login/?next=/admin/",
        {"username": "root", "password": "pw-for-tests-123", "next": "/admin/"},
    )
    assert response.status_code == 302 and response["Location"] == "/admin/"
    assert client.get("/admin/").status_code == 200


def test_sso_routes_answer_404_when_sso_is_off(client: Client) -> None:
    assert client.get("/sso/start/").status_code == 404
    assert client.get("/sso/callback/?code=x&state=y").status_code == 404


# --- the sign-in ---------------------------------------------------------------------------


def test_login_page_offers_sso_and_keeps_the_password_form(
    client: Client, sso: FakeOIDCProvider
) -> None:
    page = client.get("/admin/login/?next=/dashboards/spend").content.decode()
    assert 'href="/sso/start/?next=/dashboards/spend"' in page
    assert "Sign in with SSO" in page
    assert 'name="password"' in page


def test_dashboards_send_a_signed_out_browser_to_the_login_page_with_sso(
    client: Client, sso: FakeOIDCProvider
) -> None:
    response = client.get("/dashboards/spend", follow=True)
    assert response.redirect_chain[-1][0].startswith("/admin/login/?next=/dashboards/spend")
    assert b"Sign in with SSO" in response.content


def test_first_sign_in_creates_the_user_from_sub_with_the_roles_of_its_groups(
    client: Client, sso: FakeOIDCProvider, acme: Organization
) -> None:
    sso.add_user(
        "00u-ada",
        email="ada@acme.dev",
        given_name="Ada",
        family_name="Lovelace",
        groups=["finops", "leads", "eng-backend", "unmapped"],
    )
    sso.sign_in_as("00u-ada")

    response = sign_in(client, "/dashboards/spend")

    assert response.status_code == 302 and response["Location"] == "/dashboards/spend"
    identity = OIDCIdentity.objects.get(subject="00u-ada")
    user = identity.user
    assert identity.issuer == sso.issuer
    assert identity.groups == ["finops", "leads", "eng-backend", "unmapped"]
    assert (user.username, user.email, user.first_name, user.last_name) == (
        "ada@acme.dev",
        "ada@acme.dev",
        "Ada",
        "Lovelace",
    )
    assert user.is_active and user.is_staff and not user.is_superuser
    assert not user.has_usable_password()
    assert roles_of(user) == {("acme", "finance", ()), ("acme", "team_lead", ("backend",))}
    assert set(Membership.objects.filter(user=user).values_list("source", flat=True)) == {"oidc"}
    assert int(client.session["_auth_user_id"]) == user.pk
    assert client.get("/admin/").status_code == 200
    # Every write of the sign-in is audited, as the user's single sign-on.
    events = AuditEvent.objects.filter(actor="sso:ada@acme.dev")
    assert {e.subject_type for e in events} >= {
        "auth.User",
        "governance.OIDCIdentity",
        "governance.Membership",
    }


def test_second_sign_in_replaces_sso_roles_and_keeps_manual_ones(
    client: Client, sso: FakeOIDCProvider, acme: Organization
) -> None:
    sso.add_user("u1", email="u1@acme.dev", groups=["gw-admins", "finops"])
    sso.sign_in_as("u1")
    sign_in(client)
    user = OIDCIdentity.objects.get(subject="u1").user
    memberships.save_membership(
        actor=ACTOR, membership=Membership(user=user, organization=None, role=Role.AUDITOR)
    )

    sso.user("u1").groups = ["audit"]
    sso.user("u1").email = "u1.new@acme.dev"
    client.logout()
    sign_in(client)

    user.refresh_from_db()
    assert user.email == "u1.new@acme.dev"
    assert roles_of(user) == {("acme", "auditor", ()), (None, "auditor", ())}
    deleted = AuditEvent.objects.filter(
        verb=AuditEvent.Verb.DELETED, subject_type="governance.Membership"
    )
    assert deleted.count() == 2
    assert set(deleted.values_list("actor", flat=True)) == {"sso:u1@acme.dev"}


def test_groups_that_map_to_nothing_give_no_role_and_no_admin(
    client: Client, sso: FakeOIDCProvider, acme: Organization
) -> None:
    sso.add_user("u2", email="u2@acme.dev", groups=["eng-backend", "everyone"])
    sso.sign_in_as("u2")

    sign_in(client)

    user = OIDCIdentity.objects.get(subject="u2").user
    assert roles_of(user) == set()
    assert not user.is_staff
    response = client.get("/admin/")
    assert response.status_code == 302 and response["Location"].startswith("/admin/login/")


def test_losing_every_mapped_group_takes_the_admin_away(
    client: Client, sso: FakeOIDCProvider, acme: Organization
) -> None:
    sso.add_user("u3", email="u3@acme.dev", groups=["gw-admins"])
    sso.sign_in_as("u3")
    sign_in(client)
    user = OIDCIdentity.objects.get(subject="u3").user
    assert user.is_staff

    sso.user("u3").groups = []
    client.logout()
    sign_in(client)

    user.refresh_from_db()
    assert roles_of(user) == set() and not user.is_staff


def test_sign_in_matches_the_subject_never_the_email(
    client: Client, sso: FakeOIDCProvider, acme: Organization
) -> None:
    root = User.objects.create_superuser("root@acme.dev", "root@acme.dev", "pw-for-tests-123")
    sso.add_user("intruder", email="root@acme.dev", groups=["gw-admins"])
    sso.sign_in_as("intruder")

    sign_in(client)

    user = OIDCIdentity.objects.get(subject="intruder").user
    assert user.pk != root.pk
    assert user.username == "sso.intruder"  # the email is someone's username already
    assert not user.is_superuser
    root.refresh_from_db()
    assert root.is_superuser and not Membership.objects.filter(user=root).exists()


def test_user_switched_off_in_the_gateway_cannot_sign_in_and_nothing_is_written(
    client: Client, sso: FakeOIDCProvider, acme: Organization
) -> None:
    sso.add_user("u4", email="u4@acme.dev", groups=["finops"])
    sso.sign_in_as("u4")
    sign_in(client)
    user = OIDCIdentity.objects.get(subject="u4").user
    user.is_active = False
    user.save()
    client.logout()
    sso.user("u4").groups = ["gw-admins"]
    events = AuditEvent.objects.count()

    response = sign_in(client)

    assert response.status_code == 302 and response["Location"].startswith("/admin/login/")
    assert "_auth_user_id" not in client.session
    assert roles_of(user) == {("acme", "finance", ())}
    assert AuditEvent.objects.count() == events
    user.refresh_from_db()
    assert not user.is_active  # the gateway's decision stands


def test_sso_session_ends_after_the_configured_time(
    client: Client, sso: FakeOIDCProvider, settings: Any
) -> None:
    settings.GATEWAY_OIDC_SESSION_SECONDS = 1800
    sso.add_user("u5", email="u5@acme.dev")
    sso.sign_in_as("u5")
    sign_in(client)
    assert client.session.get_expiry_age() == 1800


# --- what the protocol checks ----------------------------------------------------------------


def test_authorization_request_carries_state_nonce_and_a_pkce_s256_challenge(
    client: Client, sso: FakeOIDCProvider
) -> None:
    sso.add_user("u6", email="u6@acme.dev")
    sso.sign_in_as("u6")

    url = start(client)
    params = query(url)
    assert url.startswith(f"{sso.issuer}/authorize?")
    assert params["client_id"] == CLIENT_ID
    assert params["redirect_uri"] == f"{TESTSERVER}/sso/callback/"
    assert params["scope"] == "openid email profile groups"
    assert params["code_challenge_method"] == "S256"
    assert len(params["state"]) >= 32 and len(params["nonce"]) >= 32
    client.get(path_and_query(authorize(url)))

    [exchange] = sso.requests_to("/token")
    assert exchange.form["grant_type"] == "authorization_code"
    assert s256(exchange.form["code_verifier"]) == params["code_challenge"]
    assert exchange.client_auth == "basic"  # the provider lists client_secret_basic
    assert "_auth_user_id" in client.session


def test_tampered_state_is_refused(client: Client, sso: FakeOIDCProvider) -> None:
    sso.add_user("u7", email="u7@acme.dev")
    sso.sign_in_as("u7")
    callback = query(authorize(start(client)))

    response = client.get("/sso/callback/", {"code": callback["code"], "state": "forged-state"})

    assert response.status_code == 400
    assert "_auth_user_id" not in client.session
    assert sso.requests_to("/token") == []  # the code was never even exchanged


def test_callback_without_a_login_started_in_this_browser_is_refused(
    client: Client, sso: FakeOIDCProvider
) -> None:
    sso.add_user("u8", email="u8@acme.dev")
    sso.sign_in_as("u8")
    callback = authorize(start(client))

    stranger = Client()
    response = stranger.get(path_and_query(callback))

    assert response.status_code == 302 and response["Location"].startswith("/admin/login/")
    assert "_auth_user_id" not in stranger.session


def test_code_replayed_with_another_sessions_verifier_is_refused(
    client: Client, sso: FakeOIDCProvider
) -> None:
    sso.add_user("victim", email="victim@acme.dev")
    sso.sign_in_as("victim")
    stolen = query(authorize(start(client)))["code"]
    attacker = Client()
    attacker_state = query(start(attacker))["state"]

    response = attacker.get("/sso/callback/", {"code": stolen, "state": attacker_state})

    assert response.status_code == 302 and response["Location"].startswith("/admin/login/")
    assert "_auth_user_id" not in attacker.session
    assert not OIDCIdentity.objects.exists()


def test_provider_refusal_returns_to_the_login_page_with_a_message(
    client: Client, sso: FakeOIDCProvider
) -> None:
    sso.add_user("u9", email="u9@acme.dev")
    sso.sign_in_as("u9")
    sso.deny_next()

    response = client.get(path_and_query(authorize(start(client))), follow=True)

    assert response.redirect_chain[-1][0].startswith("/admin/login/")
    assert b"Single sign-on failed" in response.content
    assert "_auth_user_id" not in client.session


def test_id_token_for_another_client_is_refused(
    client: Client, sso: FakeOIDCProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    sso.add_user("u10", email="u10@acme.dev")
    sso.sign_in_as("u10")
    original = sso.id_token
    monkeypatch.setattr(sso, "id_token", functools.partial(_for_client, original, "other-app"))

    sign_in(client)

    assert "_auth_user_id" not in client.session
    assert not OIDCIdentity.objects.exists()


def _for_client(original: Any, audience: str, user: Any, *, client_id: str, nonce: str) -> str:
    token: str = original(user, client_id=audience, nonce=nonce)
    return token


def test_expired_id_token_is_refused(client: Client, sso: FakeOIDCProvider) -> None:
    sso.id_token_seconds = -300
    sso.add_user("u11", email="u11@acme.dev")
    sso.sign_in_as("u11")

    sign_in(client)

    assert "_auth_user_id" not in client.session


def test_id_token_signed_with_a_rotated_key_is_accepted(
    client: Client, sso: FakeOIDCProvider
) -> None:
    sso.add_user("u12", email="u12@acme.dev")
    sso.sign_in_as("u12")
    sso.rotate_keys()

    sign_in(client)

    assert "_auth_user_id" in client.session


@pytest.mark.parametrize(
    ("groups_in", "claim"),
    [("id_token", "groups"), ("userinfo", "groups"), ("both", "realm_access.roles")],
)
def test_groups_are_read_wherever_the_provider_puts_them(
    client: Client,
    settings: Any,
    acme: Organization,
    groups_in: Any,
    claim: str,
) -> None:
    with FakeOIDCProvider(groups_in=groups_in, groups_claim=claim) as idp:
        turn_sso_on(settings, idp, gateway_url=TESTSERVER)
        settings.GATEWAY_OIDC_GROUPS_CLAIM = claim
        idp.add_user("u13", email="u13@acme.dev", groups=["finops"])
        idp.sign_in_as("u13")
        sign_in(client)
    assert roles_of(OIDCIdentity.objects.get(subject="u13").user) == {("acme", "finance", ())}


# --- discovery -----------------------------------------------------------------------------


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def test_unreachable_provider_fails_with_a_clear_message_and_password_login_still_works(
    client: Client, sso: FakeOIDCProvider, settings: Any
) -> None:
    settings.GATEWAY_OIDC_ISSUER = closed_port_url()
    oidc.forget_metadata()
    User.objects.create_superuser("root", "root@example.com", "pw-for-tests-123")

    response = client.get("/sso/start/?next=/admin/", follow=True)

    page = response.content.decode()
    assert response.redirect_chain[-1][0].startswith("/admin/login/")
    assert "Single sign-on is unavailable" in page
    assert f"{settings.GATEWAY_OIDC_ISSUER}/.well-known/openid-configuration" in page
    assert "could not be read" in page
    login = client.post(
        "/admin/login/", {"username": "root", "password": "pw-for-tests-123", "next": "/admin/"}
    )
    assert login.status_code == 302 and client.get("/admin/").status_code == 200


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"issuer": "http://elsewhere.example"}, "names the issuer 'http://elsewhere.example'"),
        ({"code_challenge_methods_supported": ["plain"]}, "does not support PKCE with S256"),
        ({"id_token_signing_alg_values_supported": ["HS256"]}, "signs ID tokens with ['HS256']"),
        ({"jwks_uri": None}, "has no jwks_uri"),
    ],
)
def test_unusable_discovery_document_is_refused_with_what_to_fix(
    sso: FakeOIDCProvider, override: dict[str, Any], message: str
) -> None:
    sso.document_overrides = override
    with pytest.raises(oidc.DiscoveryError, match=message.replace("[", r"\[").replace("]", r"\]")):
        oidc.provider_metadata()


def test_discovery_document_is_read_once_and_cached(sso: FakeOIDCProvider) -> None:
    first = oidc.provider_metadata()
    second = oidc.provider_metadata()
    assert first == second and first.token_endpoint == f"{sso.issuer}/token"
    assert len(sso.requests_to("/.well-known/openid-configuration")) == 1


def test_password_login_with_a_code_in_its_url_never_reaches_the_provider(
    client: Client, sso: FakeOIDCProvider
) -> None:
    User.objects.create_superuser("root", "root@example.com", "pw-for-tests-123")
    response = client.post(
        "/admin/login/?code=abc&state=def",
        {"username": "root", "password": "wrong-password", "next": "/admin/"},
    )
    assert response.status_code == 200  # the form again, with its error
    assert sso.received == []


# --- groups -> roles and teams (the service) --------------------------------------------------


def test_team_lead_leads_the_organizations_teams_of_their_groups(acme: Organization) -> None:
    ml = Team.objects.get(name="ml")
    common.save_instance(TeamIdpGroup(team=ml, group="eng-ml"), actor=ACTOR)
    other = factories.organization(name="globex")
    rival = factories.team(organization=other, name="rival")
    common.save_instance(TeamIdpGroup(team=rival, group="eng-backend"), actor=ACTOR)

    grants = identities.grants_for_groups(["leads", "eng-backend", "eng-ml"])

    backend = Team.objects.get(organization=acme, name="backend")
    assert grants == {(acme.pk, Role.TEAM_LEAD): frozenset({backend.pk, ml.pk})}


def test_team_lead_group_without_a_team_group_grants_nothing(acme: Organization) -> None:
    assert identities.grants_for_groups(["leads"]) == {}


def test_mapping_without_an_organization_grants_the_role_everywhere(acme: Organization) -> None:
    common.save_instance(IdpGroupRole(role=Role.AUDITOR, group="sox"), actor=ACTOR)
    assert identities.grants_for_groups(["sox"]) == {(None, Role.AUDITOR): frozenset()}


def test_role_held_by_a_manual_membership_is_not_duplicated(acme: Organization) -> None:
    user = get_user_model().objects.create_user("manual-finance")
    memberships.save_membership(
        actor=ACTOR, membership=Membership(user=user, organization=acme, role=Role.FINANCE)
    )

    identities.replace_memberships(user=user, groups=["finops"], actor=ACTOR)
    identities.replace_memberships(user=user, groups=[], actor=ACTOR)

    [membership] = Membership.objects.filter(user=user)
    assert (membership.source, membership.role) == ("manual", "finance")


# --- the config file -------------------------------------------------------------------------

ROLES_FILE = """\
organizations:
  - name: acme
    roles:
      platform_admin: [gw-admins]
      finance: [finops, " finance-eu "]
      team_lead: [leads]
    teams:
      - name: backend
        idp_groups: [eng-backend]
      - name: ml
"""


def write(tmp_path: Path, text: str, name: str = "sso.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def mapping() -> set[tuple[str, str]]:
    return {(r.role, r.group) for r in IdpGroupRole.objects.all()} | {
        (f"team {t.team.name}", t.group) for t in TeamIdpGroup.objects.all()
    }


def test_config_file_maps_groups_to_roles_and_teams_and_applies_idempotently(
    tmp_path: Path,
) -> None:
    first = config.apply_file(write(tmp_path, ROLES_FILE))

    assert mapping() == {
        ("platform_admin", "gw-admins"),
        ("finance", "finops"),
        ("finance", "finance-eu"),
        ("team_lead", "leads"),
        ("team backend", "eng-backend"),
    }
    assert "+ create IdP group role acme finance 'finance-eu'" in first.changes
    assert "+ create team IdP group acme/backend 'eng-backend'" in first.changes
    assert not config.apply_file(write(tmp_path, ROLES_FILE)).changed


def test_config_file_is_complete_for_the_mapping_of_what_it_lists(tmp_path: Path) -> None:
    config.apply_file(write(tmp_path, ROLES_FILE))
    changed = ROLES_FILE.replace('[finops, " finance-eu "]', "[finops]").replace(
        "idp_groups: [eng-backend]", "idp_groups: [eng-ml]"
    )

    result = config.apply_file(write(tmp_path, changed))

    assert "- delete IdP group role acme finance 'finance-eu'" in result.changes
    assert "- delete team IdP group acme/backend 'eng-backend'" in result.changes
    assert ("team backend", "eng-ml") in mapping()
    assert ("finance", "finance-eu") not in mapping()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "organizations:\n  - name: acme\n    roles:\n      finanse: [x]\n",
            "line 4: organizations[0].roles.finanse: unknown field 'finanse' "
            "(did you mean finance?)",
        ),
        (
            "organizations:\n  - name: acme\n    roles:\n      auditor: [x, x]\n",
            "line 4: organizations[0].roles.auditor: 'x' appears twice",
        ),
        (
            "organizations:\n  - name: acme\n    teams:\n      - name: t\n"
            "        idp_groups: [a, '']\n",
            "line 5: organizations[0].teams[0].idp_groups[1]: string should have at least 1",
        ),
    ],
)
def test_config_file_mistakes_name_line_and_field(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as raised:
        config.apply_file(write(tmp_path, text, "bad.yaml"))
    assert f"bad.yaml {expected}" in str(raised.value)
    assert not IdpGroupRole.objects.exists()


# --- the admin -------------------------------------------------------------------------------


def test_admin_shows_the_mapping_on_organization_and_team_pages(
    admin_client: Client, acme: Organization
) -> None:
    team = Team.objects.get(name="backend")
    org_page = admin_client.get(f"/admin/governance/organization/{acme.pk}/change/")
    team_page = admin_client.get(f"/admin/governance/team/{team.pk}/change/")
    assert org_page.status_code == 200 and team_page.status_code == 200
    assert "IdP groups → roles" in org_page.content.decode()
    assert 'value="finops"' in org_page.content.decode()
    assert 'value="eng-backend"' in team_page.content.decode()
    assert admin_client.get("/admin/governance/idpgrouprole/").status_code == 200
    assert admin_client.get("/admin/governance/oidcidentity/").status_code == 200


def test_team_groups_edited_in_the_admin_are_audited(
    admin_client: Client, admin_user: Any, acme: Organization
) -> None:
    team = Team.objects.get(name="ml")
    url = f"/admin/governance/team/{team.pk}/change/"
    data = form_data(
        admin_client.get(url).content.decode(),
        **{"idp_groups-TOTAL_FORMS": "1", "idp_groups-0-group": "eng-ml"},
    )

    response = admin_client.post(url, data)

    assert response.status_code == 302, response.content.decode()[:2000]
    row = TeamIdpGroup.objects.get(team=team)
    assert row.group == "eng-ml"
    [event] = AuditEvent.objects.filter(
        subject_type="governance.TeamIdpGroup", subject_id=str(row.pk)
    )
    assert event.verb == AuditEvent.Verb.CREATED and event.actor == f"user:{admin_user.username}"


def test_team_leads_teams_follow_their_groups_at_each_sign_in(
    client: Client, sso: FakeOIDCProvider, acme: Organization
) -> None:
    ml = Team.objects.get(name="ml")
    common.save_instance(TeamIdpGroup(team=ml, group="eng-ml"), actor=ACTOR)
    sso.add_user("u15", email="u15@acme.dev", groups=["leads", "eng-backend"])
    sso.sign_in_as("u15")
    sign_in(client)
    user = OIDCIdentity.objects.get(subject="u15").user

    sso.user("u15").groups = ["leads", "eng-ml", "eng-backend"]
    client.logout()
    sign_in(client)
    assert roles_of(user) == {("acme", "team_lead", ("backend", "ml"))}

    sso.user("u15").groups = ["leads", "eng-ml"]
    client.logout()
    sign_in(client)
    assert roles_of(user) == {("acme", "team_lead", ("ml",))}
    [membership] = Membership.objects.filter(user=user)
    teams_events = AuditEvent.objects.filter(
        subject_type="governance.Membership", subject_id=str(membership.pk)
    ).order_by("id")
    assert [e.verb for e in teams_events] == ["created", "updated", "updated"]


def test_next_pointing_at_another_site_lands_on_the_admin_instead(
    client: Client, sso: FakeOIDCProvider
) -> None:
    sso.add_user("u16", email="u16@acme.dev")
    sso.sign_in_as("u16")
    response = sign_in(client, "https://attacker.example/phish")
    assert response.status_code == 302 and response["Location"] == "/admin/"


# --- settings (a fresh interpreter with a clean environment, as a server starts) -------------

SETTINGS_PROBE = (
    "import environ; environ.Env.read_env = classmethod(lambda *a, **k: None); "
    "import django; django.setup(); from django.conf import settings; "
    "print(','.join(settings.AUTHENTICATION_BACKENDS))"
)


def start_django(**env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", SETTINGS_PROBE],
        cwd=Path(__file__).resolve().parents[2],
        env={
            "DJANGO_SETTINGS_MODULE": "gatewaysite.settings",
            "DJANGO_SECRET_KEY": "a-real-secret-for-this-test-only",
            "PATH": "/usr/bin:/bin",
            **env,
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_settings_turn_the_sso_backend_on_with_the_issuer_only() -> None:
    off = start_django()
    on = start_django(
        GATEWAY_OIDC_ISSUER="https://idp.example.com",
        GATEWAY_OIDC_CLIENT_ID="gateway",
        GATEWAY_OIDC_CLIENT_SECRET="secret",
    )
    assert off.returncode == 0 and on.returncode == 0, off.stderr + on.stderr
    assert off.stdout.split() == ["django.contrib.auth.backends.ModelBackend"]
    assert on.stdout.split() == [
        "django.contrib.auth.backends.ModelBackend,governance.identity.backend.GatewayOIDCBackend"
    ]


def test_issuer_without_client_credentials_refuses_to_start() -> None:
    result = start_django(GATEWAY_OIDC_ISSUER="https://idp.example.com")
    assert result.returncode != 0
    assert "set GATEWAY_OIDC_CLIENT_ID and GATEWAY_OIDC_CLIENT_SECRET" in result.stderr


def test_switching_a_user_off_ends_their_sso_session_at_once(
    client: Client, sso: FakeOIDCProvider, acme: Organization
) -> None:
    sso.add_user("u17", email="u17@acme.dev", groups=["gw-admins"])
    sso.sign_in_as("u17")
    sign_in(client)
    assert client.get("/admin/").status_code == 200
    user = OIDCIdentity.objects.get(subject="u17").user

    user.is_active = False
    user.save()

    response = client.get("/admin/")
    assert response.status_code == 302 and response["Location"].startswith("/admin/login/")
    assert not client.get("/admin/login/").context["user"].is_authenticated
