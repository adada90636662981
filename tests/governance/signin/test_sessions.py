"""A signed-in Claude Code's session: refresh rotation, reuse detection, revocation (RFC 7009),
and deprovisioning refused at the next refresh (governance/services/signin.py)."""

from __future__ import annotations

import httpx
import pytest
from django.contrib.auth import get_user_model

from governance import policy, signin_tokens
from governance.identity import oidc
from governance.models import DeveloperKey, SignInSession, TeamIdpGroup, VirtualKey
from governance.services import common, keys
from governance.signin import bearer
from tests import factories
from tests.governance.signin.conftest import SignIn, let_grace_pass
from tests.proxy.conftest import free_port
from tests.signin_support import ACTOR

pytestmark = pytest.mark.django_db(transaction=True)


def key_of(access_token: str) -> VirtualKey:
    claims = signin_tokens.verify(access_token, key=bearer.signing_key())
    assert claims is not None
    return VirtualKey.objects.get(lookup_hash=claims.key_lookup_hash)


def test_a_refresh_rotates_the_refresh_token_and_mints_a_new_access_token(signin: SignIn):
    tokens = signin.signed_in()

    refreshed = signin.refresh(tokens["refresh_token"])

    assert refreshed.status_code == 200, refreshed.text
    assert refreshed.headers["cache-control"] == "no-store"
    body = refreshed.json()
    assert body["refresh_token"] != tokens["refresh_token"]
    assert body["access_token"] != tokens["access_token"]
    assert key_of(body["access_token"]) == key_of(tokens["access_token"])
    assert signin.refresh(body["refresh_token"]).status_code == 200  # the new one works


def test_refresh_re_reads_the_groups_from_the_identity_provider(signin: SignIn):
    tokens = signin.signed_in()
    signin.idp.user("u-alice").groups = ["eng-backend", "reviewers"]

    body = signin.refresh(tokens["refresh_token"]).json()

    claims = signin_tokens.verify(body["access_token"], key=bearer.signing_key())
    assert claims is not None and claims.groups == ("eng-backend", "reviewers")
    assert signin.idp.requests_to("/token")[-1].form["grant_type"] == "refresh_token"


def test_a_replaced_refresh_token_presented_again_revokes_the_session(signin: SignIn):
    tokens = signin.signed_in()
    newer = signin.refresh(tokens["refresh_token"]).json()
    let_grace_pass(SignInSession.objects.get())

    replayed = signin.refresh(tokens["refresh_token"])
    after = signin.refresh(newer["refresh_token"])

    assert (replayed.status_code, replayed.json()["error"]) == (400, "invalid_grant")
    assert (after.status_code, after.json()["error"]) == (400, "invalid_grant")
    session = SignInSession.objects.get()
    assert session.revoked_at is not None and "presented again" in session.revoked_reason


def test_the_loser_of_a_rotation_race_is_refused_without_ending_the_session(signin: SignIn):
    """Two terminals of one machine renew at the same moment with the stored credential."""
    tokens = signin.signed_in()
    winner = signin.refresh(tokens["refresh_token"]).json()

    loser = signin.refresh(tokens["refresh_token"])

    assert (loser.status_code, loser.json()["error"]) == (400, "invalid_grant")
    assert SignInSession.objects.get().revoked_at is None
    assert signin.refresh(winner["refresh_token"]).status_code == 200


def test_an_unknown_or_malformed_refresh_token_is_an_invalid_grant(signin: SignIn):
    signin.signed_in()
    forged = "gwr_" + SignInSession.objects.get().public_id + "guessed-secret"

    for token in ("gwr_" + "0" * 32 + "x", "garbage", forged):
        response = signin.refresh(token)
        assert (response.status_code, response.json()["error"]) == (400, "invalid_grant")


def test_revocation_ends_the_session_and_always_answers_200(signin: SignIn):
    tokens = signin.signed_in()

    revoked = signin.post("/oauth/revoke", token=tokens["refresh_token"])
    unknown = signin.post("/oauth/revoke", token="whatever", token_type_hint="refresh_token")
    access = signin.post("/oauth/revoke", token=tokens["access_token"])

    assert [r.status_code for r in (revoked, unknown, access)] == [200, 200, 200]
    assert signin.refresh(tokens["refresh_token"]).json()["error"] == "invalid_grant"
    assert SignInSession.objects.get().revoked_reason == "signed out (/logout)"


def test_a_developer_removed_from_the_teams_group_is_refused_at_refresh(signin: SignIn):
    tokens = signin.signed_in()
    sub_key = key_of(tokens["access_token"])
    signin.idp.user("u-alice").groups = ["finance"]

    refused = signin.refresh(tokens["refresh_token"])

    assert (refused.status_code, refused.json()["error"]) == (400, "invalid_grant")
    sub_key.refresh_from_db()
    assert sub_key.revoked_at is not None  # the proxy refuses the access token at once
    assert policy.load_policy(sub_key.lookup_hash) is None
    assert DeveloperKey.objects.get().deprovisioned_at is not None
    assert SignInSession.objects.get().revoked_at is not None


def test_a_deprovisioned_developer_put_back_in_the_group_gets_a_new_key(signin: SignIn):
    tokens = signin.signed_in()
    signin.idp.user("u-alice").groups = []
    signin.refresh(tokens["refresh_token"])
    signin.idp.user("u-alice").groups = ["eng-backend"]

    again = signin.signed_in()

    old, new = key_of(tokens["access_token"]), key_of(again["access_token"])
    assert old != new and new.revoked_at is None and new.parent == signin.backend.key


def test_a_team_mapping_removed_in_the_admin_is_refused_at_refresh(signin: SignIn):
    tokens = signin.signed_in()
    common.delete_instance(TeamIdpGroup.objects.get(), actor=ACTOR)

    refused = signin.refresh(tokens["refresh_token"])

    assert refused.json()["error"] == "invalid_grant"
    assert key_of(tokens["access_token"]).revoked_at is not None


def test_a_user_switched_off_in_the_admin_is_refused_at_refresh(signin: SignIn):
    tokens = signin.signed_in()
    get_user_model().objects.filter(username="alice@acme.dev").update(is_active=False)

    refused = signin.refresh(tokens["refresh_token"])

    assert (refused.status_code, refused.json()["error"]) == (400, "invalid_grant")
    assert key_of(tokens["access_token"]).revoked_at is not None


def test_a_user_switched_off_at_the_identity_provider_is_refused_at_refresh(signin: SignIn):
    tokens = signin.signed_in()
    signin.idp.user("u-alice").active = False

    refused = signin.refresh(tokens["refresh_token"])

    assert (refused.status_code, refused.json()["error"]) == (400, "invalid_grant")
    assert SignInSession.objects.get().revoked_at is not None


def test_a_key_revoked_in_the_admin_stops_the_refresh(signin: SignIn):
    tokens = signin.signed_in()
    keys.revoke_key(actor=ACTOR, key=key_of(tokens["access_token"]), reason="compromised")

    refused = signin.refresh(tokens["refresh_token"])

    assert (refused.status_code, refused.json()["error"]) == (400, "invalid_grant")
    assert "revoked by an administrator" in refused.json()["error_description"]


def test_an_identity_provider_outage_is_temporary_and_keeps_the_session(signin: SignIn):
    tokens = signin.signed_in()
    # The provider's token endpoint stops answering (nothing listens on the port).
    signin.idp.document_overrides["token_endpoint"] = f"http://127.0.0.1:{free_port()}/token"
    oidc.forget_metadata()

    outage = signin.refresh(tokens["refresh_token"])

    assert (outage.status_code, outage.json()["error"]) == (503, "temporarily_unavailable")
    assert SignInSession.objects.get().revoked_at is None
    assert key_of(tokens["access_token"]).revoked_at is None


def test_without_an_idp_refresh_token_the_session_lasts_the_sso_session(settings, signin: SignIn):
    settings.GATEWAY_SIGNIN_SCOPES = "openid email profile"  # no offline_access
    settings.GATEWAY_OIDC_SESSION_SECONDS = 3600
    tokens = signin.signed_in()
    session = SignInSession.objects.get()

    refreshed = signin.refresh(tokens["refresh_token"])

    assert session.credentials_encrypted == "" and session.ends_at is not None
    assert refreshed.status_code == 200
    assert signin.idp.requests_to("/token")[-1].form.get("grant_type") != "refresh_token"
    SignInSession.objects.update(ends_at=session.created_at)
    ended = signin.refresh(refreshed.json()["refresh_token"])
    assert ended.json()["error"] == "invalid_grant"


def test_the_access_token_reaches_the_proxy_as_the_developers_key(signin: SignIn, gateway):
    """The proxy's side (the lead's): the token names a live key, a revoked one is refused."""
    tokens = signin.signed_in()
    sub_key = key_of(tokens["access_token"])

    assert policy.load_policy(sub_key.lookup_hash) is not None
    keys.revoke_key(actor=ACTOR, key=sub_key)
    refused = httpx.get(
        signin.base + "/managed/settings",
        headers={"Authorization": f"Bearer {tokens['access_token']}"},
        timeout=10,
    )
    assert refused.status_code == 401
    assert refused.headers["x-should-retry"] == "false"


def test_a_team_key_retired_in_the_admin_moves_its_developers_to_the_new_one(signin: SignIn):
    tokens = signin.signed_in()
    keys.revoke_key(actor=ACTOR, key=signin.backend.key, reason="replaced")  # with its sub-keys
    successor = factories.virtual_key(team=signin.backend.team, name="vk-backend-2026")

    refreshed = signin.refresh(tokens["refresh_token"])
    again = signin.signed_in()

    assert refreshed.status_code == 200, refreshed.text
    for body in (refreshed.json(), again):
        key = key_of(body["access_token"])
        assert (key.parent, key.revoked_at) == (successor, None)
