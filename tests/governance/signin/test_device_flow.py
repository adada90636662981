"""Claude Code's /login through the gateway, end to end against the local OIDC provider:
discovery, device authorization, the verification page driven like a browser, polling with
authorization_pending and slow_down, and the tokens (governance/signin/)."""

from __future__ import annotations

import re
import urllib.parse

import httpx
import pytest
from django.conf import settings
from django.contrib.auth import get_user_model

from governance import signin_tokens
from governance.models import AuditEvent, DeveloperKey, SignInSession, VirtualKey
from governance.services import keys
from governance.signin import bearer, codes
from tests import factories
from tests.governance.signin.conftest import SignIn, let_interval_pass
from tests.signin_support import ACTOR, Browser, sign_in_through_browser, team_with_group

pytestmark = pytest.mark.django_db(transaction=True)


def test_discovery_names_every_endpoint_on_the_gateways_origin(signin: SignIn):
    response = httpx.get(signin.base + "/.well-known/oauth-authorization-server", timeout=10)

    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    document = response.json()
    assert document["issuer"] == signin.base
    assert document["device_authorization_endpoint"] == signin.base + "/oauth/device_authorization"
    assert document["token_endpoint"] == signin.base + "/oauth/token"
    assert document["revocation_endpoint"] == signin.base + "/oauth/revoke"
    assert document["grant_types_supported"] == [
        "urn:ietf:params:oauth:grant-type:device_code",
        "refresh_token",
    ]
    assert document["token_endpoint_auth_methods_supported"] == ["none"]


def test_device_authorization_takes_a_form_with_only_the_surface(signin: SignIn):
    response = signin.post("/oauth/device_authorization", surface="claude_code")
    with_extras = signin.post(
        "/oauth/device_authorization", surface="claude_code", client_id="ignored", foo="bar"
    )

    assert response.status_code == with_extras.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert len(body["device_code"]) == 43
    assert re.fullmatch(r"[BCDFGHJKLMNPQRSTVWXZ]{4}-[BCDFGHJKLMNPQRSTVWXZ]{4}", body["user_code"])
    assert body["verification_uri"] == signin.base + "/device"
    assert body["verification_uri_complete"] == (
        f"{signin.base}/device?user_code={body['user_code']}"
    )
    assert (body["expires_in"], body["interval"]) == (600, 5)


def test_the_full_device_flow_signs_a_developer_in_with_a_sub_key_of_the_team_key(
    signin: SignIn,
):
    started = signin.start()
    pending = signin.poll(started["device_code"])
    too_fast = signin.poll(started["device_code"])

    assert (pending.status_code, pending.json()) == (400, {"error": "authorization_pending"})
    assert too_fast.status_code == 429
    assert too_fast.json()["error"] == "slow_down"
    assert "10 s" in too_fast.json()["error_description"]  # the interval went up by 5 s

    browser = Browser.open()
    choose = browser.sign_in(started["verification_uri_complete"])
    assert choose.status_code == 200
    assert "alice@acme.dev" in choose.text
    assert "acme/backend" in choose.text
    assert "vk-backend/alice@acme.dev (new)" in choose.text  # the key it will be charged to
    let_interval_pass(started["device_code"])
    assert signin.poll(started["device_code"]).json() == {"error": "authorization_pending"}

    done = browser.approve(choose)
    assert done.status_code == 200
    assert "signed in" in done.text and "vk-backend/alice@acme.dev" in done.text

    tokens = signin.tokens(started["device_code"])
    assert tokens["token_type"] == "Bearer"
    assert tokens["expires_in"] == settings.GATEWAY_SIGNIN_TOKEN_MINUTES * 60
    assert tokens["refresh_token"].startswith("gwr_")
    claims = signin_tokens.verify(tokens["access_token"], key=bearer.signing_key())
    assert claims is not None
    sub_key = VirtualKey.objects.get(lookup_hash=claims.key_lookup_hash)
    assert (sub_key.parent, sub_key.team, sub_key.owner) == (
        signin.backend.key,
        signin.backend.team,
        "alice@acme.dev",
    )
    assert (claims.subject, claims.email, claims.groups) == (
        "u-alice",
        "alice@acme.dev",
        ("eng-backend",),
    )
    [session] = SignInSession.objects.all()
    assert (session.key, session.team, session.client) == (
        sub_key,
        signin.backend.team,
        "claude-code/2.1.332",
    )
    assert AuditEvent.objects.filter(
        subject_type="governance.SignInSession", note="Claude Code signed in"
    ).exists()


def test_a_device_code_answers_once(signin: SignIn):
    started = signin.start()
    sign_in_through_browser(started["verification_uri_complete"])
    signin.tokens(started["device_code"])

    let_interval_pass(started["device_code"])
    again = signin.poll(started["device_code"])
    unknown = signin.poll("not-a-device-code")

    assert (again.status_code, again.json()["error"]) == (400, "expired_token")
    assert (unknown.status_code, unknown.json()["error"]) == (400, "expired_token")


def test_token_requests_without_their_fields_are_invalid(signin: SignIn):
    missing = signin.post("/oauth/token", grant_type="urn:ietf:params:oauth:grant-type:device_code")
    password = signin.post("/oauth/token", grant_type="password", username="a", password="b")

    assert (missing.status_code, missing.json()["error"]) == (400, "invalid_request")
    assert (password.status_code, password.json()["error"]) == (400, "unsupported_grant_type")


def test_the_next_sign_in_reuses_the_developers_sub_key(signin: SignIn):
    first = signin.signed_in()
    second = signin.signed_in()

    [first_claims, second_claims] = [
        signin_tokens.verify(t["access_token"], key=bearer.signing_key()) for t in (first, second)
    ]
    assert first_claims is not None and second_claims is not None
    assert first_claims.key_lookup_hash == second_claims.key_lookup_hash
    assert DeveloperKey.objects.count() == 1
    assert SignInSession.objects.count() == 2


def test_deny_answers_access_denied_once_then_expired_token(signin: SignIn):
    started = signin.start()
    browser = Browser.open()
    page = browser.client.get(started["verification_uri_complete"])
    denied = browser.client.post(
        signin.base + "/device/deny",
        data={
            "csrfmiddlewaretoken": re.search(
                r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text
            ).group(1),  # type: ignore[union-attr]
            "user_code": started["user_code"],
        },
    )

    assert denied.status_code == 200 and "stopped this sign-in" in denied.text
    assert signin.poll(started["device_code"]).json()["error"] == "access_denied"
    let_interval_pass(started["device_code"])
    assert signin.poll(started["device_code"]).json()["error"] == "expired_token"


def test_denying_after_the_identity_provider_sign_in_ends_the_sign_in(signin: SignIn):
    started = signin.start()
    browser = Browser.open()
    choose = browser.sign_in(started["verification_uri_complete"])

    browser.deny(choose)

    assert signin.poll(started["device_code"]).json()["error"] == "access_denied"
    assert not DeveloperKey.objects.exists()


def test_an_unknown_code_is_not_recognized(signin: SignIn):
    browser = Browser.open()
    page = browser.client.get(signin.base + "/device")
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
    assert token is not None and "Enter the code" in page.text

    answer = browser.client.post(
        signin.base + "/device",
        data={"csrfmiddlewaretoken": token.group(1), "user_code": "BCDF-GHJK"},
    )

    assert answer.status_code == 400
    assert "not recognized" in answer.text


def test_a_user_code_matches_without_case_or_dash(signin: SignIn):
    started = signin.start()
    sloppy = started["user_code"].lower().replace("-", " ")
    url = f"{signin.base}/device?user_code={urllib.parse.quote(sloppy)}"

    to_idp = Browser.open().confirm_code(url)

    assert to_idp.status_code == 302
    assert to_idp.headers["location"].startswith(signin.idp.issuer + "/authorize?")


def test_the_identity_provider_leg_uses_pkce_and_the_sign_in_callback(signin: SignIn):
    started = signin.start()

    to_idp = Browser.open().confirm_code(started["verification_uri_complete"])

    params = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(to_idp.headers["location"]).query))
    assert params["code_challenge_method"] == "S256" and params["code_challenge"]
    assert params["redirect_uri"] == signin.base + "/oauth/callback"
    assert "offline_access" in params["scope"].split()
    assert params["state"] and params["nonce"]


def test_the_verification_page_may_post_only_to_itself_and_the_identity_provider(signin: SignIn):
    started = signin.start()

    page = httpx.get(started["verification_uri_complete"], timeout=10)

    policy = page.headers["content-security-policy"]
    assert f"form-action 'self' {signin.idp.issuer}" in policy
    assert "frame-ancestors 'none'" in policy
    assert page.headers["cache-control"] == "no-store"
    assert started["user_code"] in page.text


def test_a_developer_picks_among_their_teams(signin: SignIn):
    ml = team_with_group(organization=signin.organization, name="ml", group="ml")
    signin.idp.user("u-alice").groups = ["eng-backend", "ml"]

    tokens = signin.signed_in(team=ml.team)

    claims = signin_tokens.verify(tokens["access_token"], key=bearer.signing_key())
    assert claims is not None
    assert VirtualKey.objects.get(lookup_hash=claims.key_lookup_hash).parent == ml.key


def test_a_team_with_several_keys_is_offered_once_it_has_a_sign_in_key(signin: SignIn):
    factories.virtual_key(team=signin.backend.team, name="vk-backend-ci")
    started = signin.start()
    browser = Browser.open()

    page = browser.sign_in(started["verification_uri_complete"])

    assert page.status_code == 403
    assert "an administrator must choose its sign-in key" in page.text
    assert signin.poll(started["device_code"]).json()["error"] == "access_denied"


def test_groups_that_map_to_no_team_cannot_sign_in(signin: SignIn):
    signin.idp.user("u-alice").groups = ["finance"]
    started = signin.start()

    page = Browser.open().sign_in(started["verification_uri_complete"])

    assert page.status_code == 403
    assert "map to no team" in page.text


def test_a_key_revoked_in_the_admin_keeps_the_developer_out_until_forgotten(signin: SignIn):
    tokens = signin.signed_in()
    claims = signin_tokens.verify(tokens["access_token"], key=bearer.signing_key())
    assert claims is not None
    sub_key = VirtualKey.objects.get(lookup_hash=claims.key_lookup_hash)
    keys.revoke_key(actor=ACTOR, key=sub_key, reason="left the company")

    started = signin.start()
    refused = Browser.open().sign_in(started["verification_uri_complete"])
    DeveloperKey.objects.all().delete()  # the admin forgets the developer's key
    again = signin.signed_in()

    assert refused.status_code == 403 and "revoked by an administrator" in refused.text
    new_claims = signin_tokens.verify(again["access_token"], key=bearer.signing_key())
    assert new_claims is not None and new_claims.key_lookup_hash != claims.key_lookup_hash
    assert VirtualKey.objects.get(lookup_hash=new_claims.key_lookup_hash).name == (
        "alice@acme.dev-2"
    )


def test_every_sign_in_route_is_absent_while_single_sign_on_is_off(signin: SignIn, settings):
    settings.GATEWAY_OIDC_ISSUER = ""

    discovery = httpx.get(signin.base + "/.well-known/oauth-authorization-server", timeout=10)
    device = signin.post("/oauth/device_authorization", surface="claude_code")

    assert (discovery.status_code, device.status_code) == (404, 404)


def test_refresh_tokens_are_stored_hashed(signin: SignIn):
    tokens = signin.signed_in()

    [session] = SignInSession.objects.all()
    parsed = codes.parse_refresh_token(tokens["refresh_token"])
    assert parsed is not None
    assert session.refresh_hash == parsed.digest
    assert parsed.secret not in (session.refresh_hash, session.public_id)


def test_two_people_signing_in_with_one_code_end_it(signin: SignIn):
    signin.idp.add_user("u-mallory", email="mallory@acme.dev", groups=["eng-backend"])
    started = signin.start()
    alice = Browser.open()
    choose = alice.sign_in(started["verification_uri_complete"])
    signin.idp.sign_in_as("u-mallory")

    other = Browser.open()
    to_idp = other.confirm_code(started["verification_uri_complete"])
    back = other.client.get(to_idp.headers["location"])
    mallory = other.client.get(back.headers["location"])  # the callback
    approved = alice.approve(choose)

    assert mallory.status_code == 403 and "Someone else signed in" in mallory.text
    assert approved.status_code == 400 and "expired or already ended" in approved.text
    assert signin.poll(started["device_code"]).json()["error"] == "access_denied"


def test_a_user_switched_off_in_the_gateway_cannot_sign_in(signin: SignIn):
    signin.signed_in()
    get_user_model().objects.filter(username="alice@acme.dev").update(is_active=False)
    started = signin.start()
    browser = Browser.open()
    to_idp = browser.confirm_code(started["verification_uri_complete"])
    back = browser.client.get(to_idp.headers["location"])

    callback = browser.client.get(back.headers["location"])

    assert callback.status_code == 403 and "Your gateway account is switched off" in callback.text
    assert signin.poll(started["device_code"]).json()["error"] == "access_denied"
