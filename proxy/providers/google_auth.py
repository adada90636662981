"""Google OAuth2 access tokens for Vertex AI, from google-auth, never on the event loop.

A provider's credentials hold a service account key as JSON (`service_account_json`); without
one, Application Default Credentials are used (GOOGLE_APPLICATION_CREDENTIALS, gcloud's ADC
file, or the metadata server of the machine the gateway runs on). google-auth refreshes
synchronously over HTTP, so every refresh runs in a worker thread. A token is reused until a
few minutes before it expires (REFRESH_MARGIN, at most half its lifetime), and one refresh at a
time runs per credential: the requests that need a token meanwhile wait for that same refresh.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import google.auth
import requests
from django.core.exceptions import ValidationError
from google.auth import exceptions as google_exceptions
from google.auth.credentials import Credentials
from google.auth.transport.requests import Request
from google.oauth2 import service_account

from governance import outbound

logger = logging.getLogger("gateway.providers.vertex")

SCOPE = "https://www.googleapis.com/auth/cloud-platform"
# Refresh this long before expiry (Google tokens live an hour), so that no request ever goes
# out with a token that expires on the way.
REFRESH_MARGIN = 300.0
TOKEN_HTTP_TIMEOUT = 10.0  # each HTTP request of a refresh (google-auth retries a few times)
REFRESH_WAIT = 30.0  # how long a request waits for a refresh before it fails over
RETRY_AFTER_FAILURE = 5.0  # after a failed refresh, requests fail over at once for this long
EXPIRY_SLACK = 10.0  # a token this close to expiry is not sent any more
DEFAULT_LIFETIME = 3600.0  # for a token endpoint that states no expiry
# What a refresh raises: google-auth's own errors (transport errors included), and what a
# malformed token answer makes it raise.
REFRESH_ERRORS = (
    google_exceptions.GoogleAuthError,
    requests.RequestException,
    ValueError,
    TypeError,
    KeyError,
)


class TokenUnavailable(OSError):
    """No access token (no usable credentials, token endpoint down or refusing): an OSError,
    so the request fails over like one to a deployment that cannot be reached."""


@dataclass(frozen=True, slots=True)
class AccessToken:
    value: str = field(repr=False)
    project_id: str  # the service account's (or ADC's) project, "" when it names none
    quota_project_id: str  # billed for the calls (ADC user credentials), "" for the default

    def headers(self) -> dict[str, str]:
        headers = {"authorization": f"Bearer {self.value}"}
        if self.quota_project_id:
            headers["x-goog-user-project"] = self.quota_project_id
        return headers


class _Transport(Request):
    """google-auth's requests transport with a short timeout and no redirects: a redirect
    would carry the signed assertion wherever the token endpoint says."""

    def __call__(
        self,
        url: str,
        method: str = "GET",
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> Any:
        kwargs["allow_redirects"] = False
        limit = min(timeout or TOKEN_HTTP_TIMEOUT, TOKEN_HTTP_TIMEOUT)
        # google-auth's transport and credentials methods carry no type hints.
        return super().__call__(  # type: ignore[no-untyped-call]
            url, method, body, headers, timeout=limit, **kwargs
        )


def _check_token_uri(token_uri: str) -> None:
    """A configured key's token_uri is where the signed assertion is posted, on an admin's
    say-so: the outbound guard applies, as to any provider URL (governance/outbound.py).
    Checked before every refresh, since what the name resolves to can change."""
    try:
        outbound.checked_addresses(token_uri)
    except ValidationError:
        raise TokenUnavailable(
            "the service account's token_uri is not an allowed destination"
        ) from None
    except OSError:
        raise TokenUnavailable("the service account's token_uri does not resolve") from None


def _from_key(service_account_json: str) -> tuple[Credentials, str, str]:
    """The credentials, project id and token_uri of a service account key."""
    # Messages never quote the key: it is a secret.
    try:
        info = json.loads(service_account_json)
    except ValueError:
        raise TokenUnavailable("service_account_json is not valid JSON") from None
    if not isinstance(info, dict):
        raise TokenUnavailable("service_account_json is not a JSON object")
    token_uri = info.get("token_uri")
    if not isinstance(token_uri, str) or not token_uri:
        raise TokenUnavailable("the service account key has no token_uri")
    try:
        credentials = service_account.Credentials.from_service_account_info(  # type: ignore[no-untyped-call]
            info, scopes=[SCOPE]
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise TokenUnavailable(
            f"service_account_json is not a usable service account key ({type(exc).__name__})"
        ) from None
    return credentials, str(info.get("project_id") or ""), token_uri


def _application_default() -> tuple[Credentials, str]:
    try:
        credentials, project = google.auth.default(scopes=[SCOPE])
    except google_exceptions.GoogleAuthError as exc:
        reason = str(exc)[:300]
        raise TokenUnavailable(
            f"no service account given and no application default credentials ({reason})"
        ) from None
    return credentials, project or ""


def _utcnow() -> datetime.datetime:
    # google-auth keeps expiry as a naive UTC datetime.
    return datetime.datetime.now(datetime.UTC).replace(tzinfo=None)


@dataclass(frozen=True, slots=True)
class _Refreshed:
    token: AccessToken
    lifetime: float  # seconds left when the refresh ended


class TokenSource:
    """The access token of one credential configuration, cached and refreshed ahead of time."""

    def __init__(
        self,
        service_account_json: str,
        *,
        clock: Callable[[], float] = time.monotonic,
        margin: float = REFRESH_MARGIN,
    ) -> None:
        self._key = service_account_json
        self._clock = clock
        self._margin = margin
        # Touched only in the worker thread of the one refresh in flight.
        self._credentials: Credentials | None = None
        self._project = ""
        self._token_uri = ""  # a configured key's; ADC's are the machine's own business
        # Touched only on the event loop.
        self._current: AccessToken | None = None
        self._refresh_at = 0.0
        self._expires_at = 0.0
        self._failed_until = 0.0
        self._inflight: asyncio.Task[None] | None = None

    async def token(self) -> AccessToken:
        current = self._current
        now = self._clock()
        if current is not None and now < self._refresh_at:
            return current
        if now < self._failed_until:
            return self._still_valid(TokenUnavailable("the last token refresh failed"))
        if self._inflight is None:
            self._inflight = asyncio.create_task(self._refresh())
        try:
            # Shielded: a request that gives up (or whose client leaves) does not cancel the
            # refresh the others wait for, and its thread is never doubled by a second one.
            await asyncio.wait_for(asyncio.shield(self._inflight), REFRESH_WAIT)
        except TokenUnavailable as exc:
            return self._still_valid(exc)
        except TimeoutError:
            return self._still_valid(TokenUnavailable("the token refresh is taking too long"))
        if self._current is None:  # invalidated while the refresh ran
            raise TokenUnavailable("the access token was refused")
        return self._current

    def invalidate(self, token: AccessToken) -> None:
        """Forget a token Vertex refused (revoked, or the key was rotated): the next request
        fetches a new one."""
        if self._current is not None and self._current.value == token.value:
            self._current = None
            self._refresh_at = self._expires_at = 0.0

    def _still_valid(self, failure: TokenUnavailable) -> AccessToken:
        # A token due for refresh is good until it expires: a token endpoint that is down
        # costs nothing while the last token lasts.
        current = self._current
        if current is not None and self._clock() < self._expires_at - EXPIRY_SLACK:
            return current
        raise failure

    async def _refresh(self) -> None:
        try:
            refreshed = await asyncio.to_thread(self._refresh_blocking)
        except TokenUnavailable as exc:
            self._failed_until = self._clock() + RETRY_AFTER_FAILURE
            logger.warning("Vertex AI access token unavailable: %s", exc)
            raise
        finally:
            self._inflight = None
        now = self._clock()
        self._current = refreshed.token
        self._expires_at = now + refreshed.lifetime
        self._refresh_at = self._expires_at - min(self._margin, refreshed.lifetime / 2)
        self._failed_until = 0.0

    def _refresh_blocking(self) -> _Refreshed:
        """Load the credentials (once) and fetch a token: blocking network I/O, in a thread."""
        if self._credentials is None and self._key:
            self._credentials, self._project, self._token_uri = _from_key(self._key)
        elif self._credentials is None:
            self._credentials, self._project = _application_default()
        if self._token_uri:
            _check_token_uri(self._token_uri)
        credentials = self._credentials
        session = requests.Session()
        try:
            credentials.refresh(_Transport(session))  # type: ignore[no-untyped-call]
        except REFRESH_ERRORS as exc:
            # The first argument is the token endpoint's error and description (never the
            # key or a token); the rest may quote the whole answer.
            reason = str(exc.args[0] if exc.args else type(exc).__name__)[:300]
            raise TokenUnavailable(f"token refresh failed: {reason}") from None
        finally:
            session.close()
        value = credentials.token
        if not isinstance(value, str) or not value:
            raise TokenUnavailable("the token endpoint answered without an access token")
        expiry = credentials.expiry
        if isinstance(expiry, datetime.datetime):
            lifetime = (expiry - _utcnow()).total_seconds()
        else:
            lifetime = DEFAULT_LIFETIME
        quota = getattr(credentials, "quota_project_id", None)
        token = AccessToken(value, self._project, quota if isinstance(quota, str) else "")
        return _Refreshed(token, max(lifetime, 0.0))
