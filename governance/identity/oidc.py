"""The OpenID Connect client's settings and the identity provider's metadata.

Everything comes from the environment (gatewaysite/settings.py): GATEWAY_OIDC_ISSUER turns
single sign-on on, and the provider's endpoints, signing algorithms and client authentication
methods are read from its discovery document, `{issuer}/.well-known/openid-configuration`, at
the first sign-in (and again after DISCOVERY_TTL_SECONDS, so an IdP that moves an endpoint is
followed). An unreachable or inconsistent document fails that sign-in with DiscoveryError,
whose message says what to fix; password logins never depend on it.

The Claude Code sign-in (issue 12) signs developers in through the same provider and reuses
`client_config`, `provider_metadata` and `groups_from_claims`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx
from django.conf import settings

DISCOVERY_PATH = "/.well-known/openid-configuration"
DISCOVERY_TTL_SECONDS = 3600.0
# What the ID token may be signed with: asymmetric keys published at jwks_uri. mozilla-django-oidc
# verifies RS* and ES* against the JWKS (anything else it would check against the client secret).
ASYMMETRIC_ALGORITHMS = ("RS256", "RS384", "RS512", "ES256", "ES384", "ES512")


class DiscoveryError(Exception):
    """The identity provider's discovery document could not be read or is not usable."""


@dataclass(frozen=True, slots=True)
class ClientConfig:
    """The gateway as an OpenID Connect client (relying party)."""

    issuer: str
    client_id: str
    client_secret: str
    scopes: str
    groups_claim: str
    timeout_seconds: float

    @property
    def discovery_url(self) -> str:
        return self.issuer.rstrip("/") + DISCOVERY_PATH


def client_config() -> ClientConfig | None:
    """The client settings, or None when single sign-on is off (GATEWAY_OIDC_ISSUER unset)."""
    issuer = str(getattr(settings, "GATEWAY_OIDC_ISSUER", "") or "")
    if not issuer:
        return None
    return ClientConfig(
        issuer=issuer,
        client_id=settings.GATEWAY_OIDC_CLIENT_ID,
        client_secret=settings.GATEWAY_OIDC_CLIENT_SECRET,
        scopes=settings.GATEWAY_OIDC_SCOPES,
        groups_claim=settings.GATEWAY_OIDC_GROUPS_CLAIM,
        timeout_seconds=settings.GATEWAY_OIDC_TIMEOUT_SECONDS,
    )


def enabled() -> bool:
    return client_config() is not None


def require_config() -> ClientConfig:
    config = client_config()
    if config is None:
        raise DiscoveryError("single sign-on is off: GATEWAY_OIDC_ISSUER is not set")
    return config


@dataclass(frozen=True, slots=True)
class ProviderMetadata:
    """What the gateway uses of the discovery document."""

    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    userinfo_endpoint: str  # "" when the provider has none: the ID token's claims are used
    signing_algorithm: str
    token_auth_basic: bool  # client_secret_basic, else client_secret_post

    @classmethod
    def from_document(
        cls, document: Mapping[str, Any], *, config: ClientConfig
    ) -> ProviderMetadata:
        where = config.discovery_url
        issuer = _text(document, "issuer", where)
        # OpenID Connect Discovery requires the exact issuer; a trailing slash is forgiven
        # (some providers publish one), and the published value is what ID tokens must carry.
        if issuer.rstrip("/") != config.issuer.rstrip("/"):
            raise DiscoveryError(
                f"{where} names the issuer {issuer!r}, not {config.issuer!r}: "
                "set GATEWAY_OIDC_ISSUER to the provider's issuer exactly"
            )
        return cls(
            issuer=issuer,
            authorization_endpoint=_text(document, "authorization_endpoint", where),
            token_endpoint=_text(document, "token_endpoint", where),
            jwks_uri=_text(document, "jwks_uri", where),
            userinfo_endpoint=str(document.get("userinfo_endpoint") or ""),
            signing_algorithm=_signing_algorithm(document, where),
            token_auth_basic=_token_auth_basic(document, where),
        )


def _text(document: Mapping[str, Any], name: str, where: str) -> str:
    value = document.get(name)
    if not isinstance(value, str) or not value:
        raise DiscoveryError(f"{where} has no {name}")
    return value


def _signing_algorithm(document: Mapping[str, Any], where: str) -> str:
    offered = document.get("id_token_signing_alg_values_supported") or ["RS256"]
    for algorithm in ASYMMETRIC_ALGORITHMS:  # RS256 first: every provider must offer it
        if algorithm in offered:
            return algorithm
    raise DiscoveryError(
        f"{where}: the provider signs ID tokens with {offered}, none of "
        f"{', '.join(ASYMMETRIC_ALGORITHMS)}"
    )


def _token_auth_basic(document: Mapping[str, Any], where: str) -> bool:
    # The default when the document says nothing is client_secret_basic (RFC 8414).
    methods = document.get("token_endpoint_auth_methods_supported") or ["client_secret_basic"]
    if "client_secret_basic" in methods:
        return True
    if "client_secret_post" in methods:
        return False
    raise DiscoveryError(
        f"{where}: the token endpoint takes {methods}, neither client_secret_basic nor "
        "client_secret_post"
    )


def _check_pkce(document: Mapping[str, Any], where: str) -> None:
    methods = document.get("code_challenge_methods_supported")
    # Providers that leave the list out usually support S256 all the same; one that lists
    # methods without it would refuse every sign-in.
    if methods is not None and "S256" not in methods:
        raise DiscoveryError(f"{where}: the provider does not support PKCE with S256 ({methods})")


_cache: dict[str, tuple[float, ProviderMetadata]] = {}
_cache_lock = threading.Lock()


def provider_metadata(*, refresh: bool = False) -> ProviderMetadata:
    """The configured provider's metadata, from its discovery document (cached per issuer)."""
    config = require_config()
    now = time.monotonic()
    with _cache_lock:
        cached = _cache.get(config.issuer)
    if cached is not None and not refresh and now - cached[0] < DISCOVERY_TTL_SECONDS:
        return cached[1]
    metadata = ProviderMetadata.from_document(_fetch(config), config=config)
    with _cache_lock:
        _cache[config.issuer] = (now, metadata)
    return metadata


def forget_metadata() -> None:
    """Drop the cached documents (tests, or after the provider changed its endpoints)."""
    with _cache_lock:
        _cache.clear()


def _fetch(config: ClientConfig) -> Mapping[str, Any]:
    where = config.discovery_url
    try:
        response = httpx.get(where, timeout=config.timeout_seconds, follow_redirects=False)
    except httpx.HTTPError as error:
        raise DiscoveryError(
            f"the identity provider's discovery document {where} could not be read "
            f"({type(error).__name__}: {error}); check GATEWAY_OIDC_ISSUER and that the "
            "provider is reachable from the gateway"
        ) from None
    if response.status_code != 200:
        raise DiscoveryError(
            f"the identity provider's discovery document {where} answered HTTP "
            f"{response.status_code}; check GATEWAY_OIDC_ISSUER"
        )
    try:
        document = response.json()
    except ValueError:
        raise DiscoveryError(f"{where} did not answer JSON; check GATEWAY_OIDC_ISSUER") from None
    if not isinstance(document, dict):
        raise DiscoveryError(f"{where} did not answer a JSON object")
    _check_pkce(document, where)
    return document


def groups_from_claims(claims: Mapping[str, Any], claim: str) -> tuple[str, ...]:
    """The IdP groups in `claims[claim]`: a list of names (or one name). A dotted claim
    (`realm_access.roles`) reads a nested object when no claim has the dotted name itself."""
    value: Any = claims.get(claim)
    if value is None and "." in claim:
        value = claims
        for part in claim.split("."):
            value = value.get(part) if isinstance(value, Mapping) else None
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list | tuple):
        return ()
    names = (item.strip() for item in value if isinstance(item, str))
    return tuple(dict.fromkeys(name for name in names if name))
