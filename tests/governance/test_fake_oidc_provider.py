"""The local OIDC provider itself (tests/fakes/oidc_provider.py): it must be as strict as a real
identity provider, or the single sign-on tests built on it would prove nothing. Driven with
plain httpx, as any client would drive it (no database)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import pytest

from tests.fakes.oidc_provider import FakeOIDCProvider, s256
from tests.sso_support import query

CLIENT = "app"
SECRET = "app-secret-0123456789"
CALLBACK = "http://127.0.0.1:9/callback"
VERIFIER = "v" * 50


@pytest.fixture
def idp() -> Iterator[FakeOIDCProvider]:
    with FakeOIDCProvider() as provider:
        provider.add_client(CLIENT, SECRET, [CALLBACK])
        provider.add_user("u1", email="u1@example.com", groups=["g1"])
        provider.sign_in_as("u1")
        yield provider


def authorization(idp: FakeOIDCProvider, **overrides: str) -> dict[str, str]:
    params = {
        "client_id": CLIENT,
        "redirect_uri": CALLBACK,
        "response_type": "code",
        "scope": "openid email groups offline_access",
        "state": "state-1",
        "nonce": "nonce-1",
        "code_challenge": s256(VERIFIER),
        "code_challenge_method": "S256",
    }
    params.update(overrides)
    return {k: v for k, v in params.items() if v}


def authorize(idp: FakeOIDCProvider, **overrides: str) -> httpx.Response:
    return httpx.get(f"{idp.issuer}/authorize", params=authorization(idp, **overrides))


def code(idp: FakeOIDCProvider) -> str:
    return query(authorize(idp).headers["location"])["code"]


def exchange(idp: FakeOIDCProvider, the_code: str, **overrides: str) -> httpx.Response:
    form = {
        "grant_type": "authorization_code",
        "code": the_code,
        "redirect_uri": CALLBACK,
        "code_verifier": VERIFIER,
    }
    form.update(overrides)
    return httpx.post(f"{idp.issuer}/token", data=form, auth=(CLIENT, SECRET))


def verified_claims(idp: FakeOIDCProvider, token: str) -> dict[str, Any]:
    keys = jwt.PyJWKClient(f"{idp.issuer}/jwks").get_signing_key_from_jwt(token)
    claims: dict[str, Any] = jwt.decode(
        token, keys.key, algorithms=["RS256"], audience=CLIENT, issuer=idp.issuer
    )
    return claims


def test_discovery_names_every_endpoint_and_pkce_s256(idp: FakeOIDCProvider) -> None:
    document = httpx.get(f"{idp.issuer}/.well-known/openid-configuration").json()
    assert document["issuer"] == idp.issuer
    for name, path in [
        ("authorization_endpoint", "/authorize"),
        ("token_endpoint", "/token"),
        ("userinfo_endpoint", "/userinfo"),
        ("jwks_uri", "/jwks"),
    ]:
        assert document[name] == idp.issuer + path
    assert document["code_challenge_methods_supported"] == ["S256"]


def test_code_flow_answers_a_signed_id_token_with_the_users_claims(idp: FakeOIDCProvider) -> None:
    redirect = authorize(idp)
    assert redirect.status_code == 302
    answer = query(redirect.headers["location"])
    assert answer["state"] == "state-1"

    tokens = exchange(idp, answer["code"]).json()

    claims = verified_claims(idp, tokens["id_token"])
    assert (claims["sub"], claims["email"], claims["groups"], claims["nonce"]) == (
        "u1",
        "u1@example.com",
        ["g1"],
        "nonce-1",
    )
    userinfo = httpx.get(
        f"{idp.issuer}/userinfo", headers={"Authorization": f"Bearer {tokens['access_token']}"}
    )
    assert userinfo.json()["groups"] == ["g1"]


@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        ({"code_verifier": "w" * 50}, "PKCE verification failed"),
        ({"code_verifier": ""}, "PKCE verification failed"),
        ({"redirect_uri": "http://127.0.0.1:9/other"}, "redirect_uri differs"),
    ],
)
def test_token_request_is_refused_without_the_right_verifier_or_redirect(
    idp: FakeOIDCProvider, overrides: dict[str, str], error: str
) -> None:
    refused = exchange(idp, code(idp), **overrides)
    assert refused.status_code == 400
    assert (
        refused.json()["error"] == "invalid_grant" and error in refused.json()["error_description"]
    )


def test_a_code_is_single_use(idp: FakeOIDCProvider) -> None:
    the_code = code(idp)
    assert exchange(idp, the_code).status_code == 200
    assert exchange(idp, the_code).json()["error"] == "invalid_grant"


def test_wrong_client_secret_is_invalid_client(idp: FakeOIDCProvider) -> None:
    refused = httpx.post(
        f"{idp.issuer}/token",
        data={"grant_type": "authorization_code", "code": code(idp), "redirect_uri": CALLBACK},
        auth=(CLIENT, "wrong"),
    )
    assert refused.status_code == 401 and refused.json()["error"] == "invalid_client"


def test_unregistered_redirect_uri_is_never_redirected_to(idp: FakeOIDCProvider) -> None:
    answer = authorize(idp, redirect_uri="http://attacker.example/cb")
    assert answer.status_code == 400 and "location" not in answer.headers


@pytest.mark.parametrize(
    ("overrides", "description"),
    [
        ({"code_challenge": "", "code_challenge_method": ""}, "code_challenge is required"),
        ({"code_challenge_method": "plain"}, "must be S256"),
        ({"state": ""}, "state is required"),
        ({"nonce": ""}, "nonce is required"),
        ({"scope": "email"}, "scope must include openid"),
    ],
)
def test_incomplete_authorization_requests_are_refused_back_to_the_client(
    idp: FakeOIDCProvider, overrides: dict[str, str], description: str
) -> None:
    answer = query(authorize(idp, **overrides).headers["location"])
    assert answer["error"] in ("invalid_request", "invalid_scope")
    assert description in answer["error_description"]


def test_login_form_signs_in_the_named_user(idp: FakeOIDCProvider) -> None:
    idp.sign_in_as(None)
    idp.add_user("u2", email="u2@example.com")
    form = authorize(idp)
    assert form.status_code == 200 and 'name="username"' in form.text

    fields = {**authorization(idp), "username": "u2@example.com"}
    signed_in = httpx.post(f"{idp.issuer}/authorize", data=fields)

    tokens = exchange(idp, query(signed_in.headers["location"])["code"]).json()
    assert verified_claims(idp, tokens["id_token"])["sub"] == "u2"


def test_refresh_tokens_rotate_and_stop_for_a_disabled_user(idp: FakeOIDCProvider) -> None:
    first = exchange(idp, code(idp)).json()["refresh_token"]

    def refresh(token: str) -> httpx.Response:
        return httpx.post(
            f"{idp.issuer}/token",
            data={"grant_type": "refresh_token", "refresh_token": token},
            auth=(CLIENT, SECRET),
        )

    rotated = refresh(first)
    assert rotated.status_code == 200
    second = rotated.json()["refresh_token"]
    assert refresh(first).json()["error"] == "invalid_grant"  # used once already
    idp.user("u1").groups = ["g2"]
    idp.user("u1").active = False
    assert refresh(second).json()["error"] == "invalid_grant"
    assert query(authorize(idp).headers["location"])["error"] == "access_denied"
