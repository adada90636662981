"""A real gateway (uvicorn, in a thread) signing developers in through the project's local OIDC
provider; the client's requests are made with httpx, as Claude Code makes them."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from governance.models import DeviceGrant, Organization, SignInSession
from governance.signin import bearer, codes
from tests import factories
from tests.fakes.oidc_provider import FakeOIDCProvider
from tests.proxy.conftest import GatewayServer, start_gateway
from tests.signin_support import (
    SignInTeam,
    sign_in_through_browser,
    signin_base,
    team_with_group,
    turn_signin_on,
)

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
CLAUDE_CODE = "claude-code/2.1.332"  # the User-Agent of its /login requests


@pytest.fixture
def idp() -> Iterator[FakeOIDCProvider]:
    with FakeOIDCProvider() as provider:
        yield provider


@pytest.fixture
def gateway(settings: Any, tmp_path: Any) -> Iterator[GatewayServer]:
    settings.GATEWAY_POLICY_CHECK_SECONDS = 0
    settings.GATEWAY_SPOOL_DIR = str(tmp_path / "spool")
    bearer.forget()
    server = start_gateway()
    yield server
    server.stop()


@dataclass
class SignIn:
    """The gateway's sign-in, and what Claude Code does with it."""

    base: str
    idp: FakeOIDCProvider
    organization: Organization
    backend: SignInTeam

    def post(self, path: str, **form: str) -> httpx.Response:
        return httpx.post(
            self.base + path, data=form, headers={"User-Agent": CLAUDE_CODE}, timeout=10
        )

    def start(self) -> dict[str, Any]:
        response = self.post("/oauth/device_authorization", surface="claude_code")
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def poll(self, device_code: str) -> httpx.Response:
        return self.post("/oauth/token", grant_type=DEVICE_GRANT, device_code=device_code)

    def refresh(self, refresh_token: str) -> httpx.Response:
        return self.post("/oauth/token", grant_type="refresh_token", refresh_token=refresh_token)

    def tokens(self, device_code: str) -> dict[str, Any]:
        """The poll after approval, once the client waited its interval."""
        let_interval_pass(device_code)
        response = self.poll(device_code)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def signed_in(self, team: Any = None) -> dict[str, Any]:
        """Sign in from start to tokens."""
        started = self.start()
        sign_in_through_browser(started["verification_uri_complete"], team)
        return self.tokens(started["device_code"])

    def get(self, path: str, token: str = "", **headers: str) -> httpx.Response:
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return httpx.get(self.base + path, headers=headers, timeout=10)


def let_interval_pass(device_code: str) -> None:
    """As if the client had waited its polling interval since its last poll."""
    DeviceGrant.objects.filter(device_code_hash=codes.digest(device_code)).update(
        last_polled_at=None
    )


def let_grace_pass(session: SignInSession) -> None:
    """As if the last rotation of `session` were long past (beyond the reuse grace)."""
    SignInSession.objects.filter(pk=session.pk).update(
        rotated_at=dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
    )


@pytest.fixture
def signin(settings: Any, idp: FakeOIDCProvider, gateway: GatewayServer) -> SignIn:
    """acme/backend (IdP group eng-backend, key vk-backend); Alice in eng-backend, whom the
    identity provider signs in at once."""
    turn_signin_on(settings, idp, gateway_url=gateway.base_url)
    org = factories.organization(name="acme")
    backend = team_with_group(organization=org, name="backend", group="eng-backend")
    idp.add_user("u-alice", email="alice@acme.dev", groups=["eng-backend"], given_name="Alice")
    idp.sign_in_as("u-alice")
    return SignIn(signin_base(gateway.base_url), idp, org, backend)
