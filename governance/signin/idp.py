"""The identity provider's side of the Claude Code sign-in, on the admin SSO's OpenID Connect
client (governance/identity/): the same provider, client and checks of the ID token
(signature against the JWKS, issuer, audience, expiry, nonce), with a redirect URI of its own,
`<gateway><GATEWAY_SIGNIN_PATH>/oauth/callback`, and `offline_access` added to the scopes.

A refresh of a session calls the provider's token endpoint with the IdP refresh token kept
(encrypted) with the session: the provider's answer is the developer's current identity and
groups. A provider that refuses the refresh token (`invalid_grant`: signed out, switched off)
is told apart from one that cannot be reached (an outage, which must not sign anyone out).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import requests
from django.conf import settings
from django.core.exceptions import SuspiciousOperation
from django.utils.crypto import get_random_string
from django.utils.http import urlencode
from mozilla_django_oidc.utils import generate_code_challenge

from governance.identity import oidc
from governance.identity.backend import GatewayOIDCBackend
from governance.services.identities import Profile

logger = logging.getLogger(__name__)
OFFLINE_ACCESS = "offline_access"


class IdpUnavailable(Exception):
    """The provider could not be asked (down, misconfigured): a temporary condition."""


class IdpRefused(Exception):
    """The provider refused (the developer's sign-in there ended, or the answer failed a check)."""


@dataclass(frozen=True, slots=True)
class Authorization:
    """What the browser is sent to the provider with, and what the callback checks."""

    url: str
    state: str
    nonce: str
    code_verifier: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class SignedIn:
    profile: Profile
    refresh_token: str = field(repr=False)  # the provider's, "" when it issued none


def scopes() -> str:
    configured = str(settings.GATEWAY_SIGNIN_SCOPES or "").strip()
    if configured:
        return configured
    base = oidc.require_config().scopes.split()
    return " ".join([*base, OFFLINE_ACCESS] if OFFLINE_ACCESS not in base else base)


def authorization(redirect_uri: str) -> Authorization:
    """The authorization request (code flow, PKCE S256, state, nonce); raises
    oidc.DiscoveryError when the provider's metadata cannot be read."""
    config = oidc.require_config()
    metadata = oidc.provider_metadata()
    state = get_random_string(32)
    nonce = get_random_string(32)
    verifier = get_random_string(64)
    params = {
        "response_type": "code",
        "client_id": config.client_id,
        "redirect_uri": redirect_uri,
        "scope": scopes(),
        "state": state,
        "nonce": nonce,
        "code_challenge": generate_code_challenge(verifier, "S256"),
        "code_challenge_method": "S256",
    }
    separator = "&" if "?" in metadata.authorization_endpoint else "?"
    url = f"{metadata.authorization_endpoint}{separator}{urlencode(params)}"
    return Authorization(url=url, state=state, nonce=nonce, code_verifier=verifier)


class _Client(GatewayOIDCBackend):
    """The SSO backend's token requests and ID-token checks, without its Django sign-in."""

    def __init__(self) -> None:
        super().__init__()
        self._load_endpoints()

    def claims(self, info: dict[str, Any], *, nonce: str | None) -> dict[str, Any]:
        id_token = info.get("id_token")
        access_token = str(info.get("access_token") or "")
        if not isinstance(id_token, str) or not id_token:
            raise SuspiciousOperation("the provider answered no ID token")
        if nonce is None:
            # A refreshed ID token carries no nonce to compare (OIDC Core 12.2).
            payload = self.get_payload_data(id_token, self.retrieve_matching_jwk(id_token))
        else:
            payload = self.verify_token(id_token, nonce=nonce)
        claims: dict[str, Any] = self.get_userinfo(access_token, id_token, payload)
        return claims


def exchange(*, code: str, redirect_uri: str, code_verifier: str, nonce: str) -> SignedIn:
    """The browser's authorization code, exchanged and checked: who signed in."""
    config = oidc.require_config()
    try:
        client = _Client()
        info = client.get_token(
            {
                "client_id": config.client_id,
                "client_secret": config.client_secret,
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": redirect_uri,
                "code_verifier": code_verifier,
            }
        )
        claims = client.claims(info, nonce=nonce)
        profile = Profile.from_claims(
            claims, issuer=oidc.provider_metadata().issuer, groups_claim=config.groups_claim
        )
    except requests.HTTPError as error:
        if _oauth_error(error.response):  # an RFC 6749 refusal (a used or expired code)
            raise IdpRefused(_describe(error)) from None
        raise IdpUnavailable(_describe(error)) from None
    except (requests.RequestException, oidc.DiscoveryError, ValueError) as error:
        raise IdpUnavailable(_describe(error)) from None
    except SuspiciousOperation as error:
        raise IdpRefused(str(error)) from None
    return SignedIn(profile=profile, refresh_token=str(info.get("refresh_token") or ""))


def refresh(*, refresh_token: str, subject: str) -> SignedIn:
    """The developer's current identity, from a refresh at the provider. The provider may
    rotate its refresh token: the one to keep is in the answer (the old one when it did not)."""
    config = oidc.require_config()
    try:
        client = _Client()
        info = client.get_token(
            {
                "client_id": config.client_id,
                "client_secret": config.client_secret,
                "grant_type": "refresh_token",
                "refresh_token": refresh_token,
            }
        )
        claims = client.claims(info, nonce=None)
        profile = Profile.from_claims(
            claims, issuer=oidc.provider_metadata().issuer, groups_claim=config.groups_claim
        )
    except requests.HTTPError as error:
        if _oauth_error(error.response) in ("invalid_grant", "unauthorized_client"):
            raise IdpRefused("the identity provider refused the refresh token") from None
        raise IdpUnavailable(_describe(error)) from None
    except (requests.RequestException, oidc.DiscoveryError, ValueError) as error:
        raise IdpUnavailable(_describe(error)) from None
    except SuspiciousOperation as error:
        raise IdpRefused(str(error)) from None
    if profile.subject != subject:
        raise IdpRefused("the identity provider answered for another subject")
    return SignedIn(profile=profile, refresh_token=str(info.get("refresh_token") or refresh_token))


def _oauth_error(response: requests.Response | None) -> str:
    if response is None or response.status_code not in (400, 401):
        return ""
    try:
        body = response.json()
    except ValueError:
        return ""
    return str(body.get("error", "")) if isinstance(body, dict) else ""


def _describe(error: Exception) -> str:
    # The library's HTTPError text quotes the provider's whole answer: only the status is kept.
    if isinstance(error, requests.HTTPError) and error.response is not None:
        return f"the identity provider answered HTTP {error.response.status_code}"
    return f"{type(error).__name__}: {error}"[:300]
