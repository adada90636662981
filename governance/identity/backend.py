"""The Django authentication backend of single sign-on, on mozilla-django-oidc.

The library runs the authorization code flow (state, nonce and PKCE S256 kept in the session,
the code exchanged with the client secret and the verifier, the ID token's signature checked
against the provider's JWKS). This module gives it its settings from the discovery document
(`library_setting`), checks what the library leaves out (the ID token's audience and issuer,
the userinfo's subject), and hands the user over to governance/services/identities.py, which
matches on the IdP's subject only and replaces the user's single sign-on roles from the
groups claim.
"""

from __future__ import annotations

import logging
from typing import Any

import jwt
import requests
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import SuspiciousOperation
from django.http import HttpRequest
from mozilla_django_oidc.auth import OIDCAuthenticationBackend

from governance.identity import oidc
from governance.services import identities

logger = logging.getLogger(__name__)

# The ID token's `exp`, `iat` and `nbf` are checked with this much clock skew allowed.
CLOCK_SKEW_SECONDS = 60

# Settings of the library that never change: the code flow with PKCE S256 and a nonce, ID
# tokens signed (never "none"), no tokens kept in the session.
_FIXED: dict[str, Any] = {
    "OIDC_USE_PKCE": True,
    "OIDC_PKCE_CODE_CHALLENGE_METHOD": "S256",
    "OIDC_USE_NONCE": True,
    "OIDC_ALLOW_UNSECURED_JWT": False,
    "OIDC_VERIFY_SSL": True,
    "OIDC_RP_IDP_SIGN_KEY": None,
    "OIDC_STORE_ACCESS_TOKEN": False,
    "OIDC_STORE_ID_TOKEN": False,
    "OIDC_AUTHENTICATION_CALLBACK_URL": "sso:callback",
    "LOGIN_REDIRECT_URL": "/admin/",
    "LOGIN_REDIRECT_URL_FAILURE": "/admin/login/",
}


def library_setting(name: str, *default: Any) -> Any:
    """What mozilla-django-oidc asks for by setting name, answered from GATEWAY_OIDC_* and the
    discovery document (which only the names of the provider's endpoints read)."""
    if name in _FIXED:
        return _FIXED[name]
    config = oidc.require_config()
    from_config = {
        "OIDC_RP_CLIENT_ID": config.client_id,
        "OIDC_RP_CLIENT_SECRET": config.client_secret,
        "OIDC_RP_SCOPES": config.scopes,
        "OIDC_TIMEOUT": config.timeout_seconds,
    }
    if name in from_config:
        return from_config[name]
    if name.startswith("OIDC_OP_") or name in ("OIDC_RP_SIGN_ALGO", "OIDC_TOKEN_USE_BASIC_AUTH"):
        metadata = oidc.provider_metadata()
        return {
            "OIDC_OP_AUTHORIZATION_ENDPOINT": metadata.authorization_endpoint,
            "OIDC_OP_TOKEN_ENDPOINT": metadata.token_endpoint,
            "OIDC_OP_USER_ENDPOINT": metadata.userinfo_endpoint or None,
            "OIDC_OP_JWKS_ENDPOINT": metadata.jwks_uri,
            "OIDC_RP_SIGN_ALGO": metadata.signing_algorithm,
            "OIDC_TOKEN_USE_BASIC_AUTH": metadata.token_auth_basic,
        }.get(name, *default)
    return getattr(settings, name, *default)


class GatewayOIDCBackend(OIDCAuthenticationBackend):  # type: ignore[misc]
    """Signs users in from the provider's answer; only active users, matched on `sub`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # The library reads the provider's endpoints here. Django builds every backend for
        # each password login and for each request of a signed-in user, so they are read at
        # a sign-in instead (`_load_endpoints`): an unreachable provider must never stop the
        # break-glass password login.
        self.UserModel = get_user_model()

    @staticmethod
    def get_settings(attr: str, *args: Any) -> Any:
        return library_setting(attr, *args)

    def get_user(self, user_id: Any) -> AbstractBaseUser | None:
        # The library's get_user skips Django's is_active check: a user switched off in the
        # admin would keep the session they signed in with.
        user: AbstractBaseUser | None = super().get_user(user_id)
        return user if user is not None and self.user_can_authenticate(user) else None

    def _load_endpoints(self) -> None:
        for name in (
            "OIDC_OP_TOKEN_ENDPOINT",
            "OIDC_OP_USER_ENDPOINT",
            "OIDC_OP_JWKS_ENDPOINT",
            "OIDC_RP_CLIENT_ID",
            "OIDC_RP_CLIENT_SECRET",
            "OIDC_RP_SIGN_ALGO",
            "OIDC_RP_IDP_SIGN_KEY",
        ):
            setattr(self, name, library_setting(name))

    def authenticate(self, request: HttpRequest | None, **kwargs: Any) -> AbstractBaseUser | None:
        # Only the callback view passes a nonce and a code verifier: a password login (even
        # one posted with ?code= in its URL) is never taken for a sign-in.
        if request is None or "nonce" not in kwargs or "code_verifier" not in kwargs:
            return None
        if not oidc.enabled():
            return None
        try:
            self._load_endpoints()
            user: AbstractBaseUser | None = super().authenticate(request, **kwargs)
        except (oidc.DiscoveryError, requests.RequestException, SuspiciousOperation) as error:
            # The provider's answers are named, never the tokens or the client secret.
            logger.warning("single sign-on failed: %s", error)
            return None
        return user

    def get_payload_data(self, token: bytes | str, key: Any) -> dict[str, Any]:
        """The ID token's claims, once its signature, algorithm, issuer, audience and expiry
        are checked (the library itself checks the signature and algorithm only)."""
        config = oidc.require_config()
        metadata = oidc.provider_metadata()
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[metadata.signing_algorithm],
                audience=config.client_id,
                issuer=metadata.issuer,
                leeway=CLOCK_SKEW_SECONDS,
                options={"require": ["iss", "aud", "exp", "iat", "sub"]},
            )
        except jwt.PyJWTError as error:
            raise SuspiciousOperation(f"ID token refused: {error}") from None
        # With several audiences the token must have been issued to this client (OIDC Core
        # 3.1.3.7, azp).
        audiences = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
        if len(audiences) > 1 and claims.get("azp") != config.client_id:
            raise SuspiciousOperation("ID token refused: issued to another party (azp)")
        return claims

    def get_userinfo(
        self, access_token: str, id_token: str, payload: dict[str, Any]
    ) -> dict[str, Any]:
        """The ID token's claims, overlaid with the userinfo endpoint's where there is one
        (some providers put the groups in one, some in the other)."""
        if not self.OIDC_OP_USER_ENDPOINT:
            return dict(payload)
        userinfo: dict[str, Any] = super().get_userinfo(access_token, id_token, payload)
        if userinfo.get("sub") != payload.get("sub"):
            # OIDC Core 5.3.2: a userinfo answer about someone else is never used.
            raise SuspiciousOperation("userinfo is about another subject than the ID token")
        return {**payload, **userinfo}

    def get_or_create_user(
        self, access_token: str, id_token: str, payload: dict[str, Any]
    ) -> AbstractBaseUser | None:
        claims = self.get_userinfo(access_token, id_token, payload)
        config = oidc.require_config()
        profile = identities.Profile.from_claims(
            claims, issuer=oidc.provider_metadata().issuer, groups_claim=config.groups_claim
        )
        return identities.sign_in(profile)
