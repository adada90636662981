"""The Claude Code sign-in in tests: the gateway as the local OIDC provider's client, a team
its developers sign in to, and the browser's steps of the verification page driven by httpx
(a real client with a cookie jar, against a real gateway)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import httpx
from django.conf import settings

from governance.identity import oidc
from governance.models import Organization, Team, TeamIdpGroup, VirtualKey
from governance.services import common
from tests import factories
from tests.fakes.oidc_provider import FakeOIDCProvider
from tests.sso_support import CLIENT_ID, CLIENT_SECRET, PASSWORD_BACKEND, SSO_BACKEND, query

ACTOR = factories.TEST_ACTOR


def turn_signin_on(settings_: Any, idp: FakeOIDCProvider, *, gateway_url: str) -> None:
    """The gateway as a client of `idp`, whose redirect URIs are the admin's and the sign-in's."""
    settings_.GATEWAY_OIDC_ISSUER = idp.issuer
    settings_.GATEWAY_OIDC_CLIENT_ID = CLIENT_ID
    settings_.GATEWAY_OIDC_CLIENT_SECRET = CLIENT_SECRET
    settings_.AUTHENTICATION_BACKENDS = [PASSWORD_BACKEND, SSO_BACKEND]
    idp.add_client(
        CLIENT_ID,
        CLIENT_SECRET,
        [f"{gateway_url}/sso/callback/", f"{signin_base(gateway_url)}/oauth/callback"],
    )
    oidc.forget_metadata()


def signin_base(gateway_url: str) -> str:
    return gateway_url + str(settings.GATEWAY_SIGNIN_PATH)


@dataclass
class SignInTeam:
    organization: Organization
    team: Team
    key: VirtualKey


def team_with_group(*, organization: Organization, name: str, group: str) -> SignInTeam:
    """A team whose IdP group maps its members to it, with its one key."""
    team = factories.team(organization=organization, name=name)
    common.save_instance(TeamIdpGroup(team=team, group=group), actor=ACTOR)
    key = factories.virtual_key(team=team, name=f"vk-{name}")
    return SignInTeam(organization, team, key)


def csrf_token(page: str) -> str:
    match = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
    assert match, "no CSRF token in the page"
    return match.group(1)


@dataclass
class Browser:
    """The developer's browser: follows the verification link, signs in at the identity
    provider (which approves at once as its `sign_in_as` user) and answers the pages."""

    client: httpx.Client

    @classmethod
    def open(cls) -> Browser:
        return cls(httpx.Client(timeout=10, follow_redirects=False))

    def close(self) -> None:
        self.client.close()

    def confirm_code(self, verification_uri_complete: str) -> httpx.Response:
        """The first page and its "This matches my device — continue" button."""
        page = self.client.get(verification_uri_complete)
        assert page.status_code == 200, page.text
        form_url = verification_uri_complete.split("?", maxsplit=1)[0]
        return self.client.post(
            form_url,
            data={
                "csrfmiddlewaretoken": csrf_token(page.text),
                "user_code": query(verification_uri_complete)["user_code"],
            },
        )

    def sign_in(self, verification_uri_complete: str) -> httpx.Response:
        """Up to the team choice: the page listing the developer's teams."""
        to_idp = self.confirm_code(verification_uri_complete)
        assert to_idp.status_code == 302, to_idp.text
        back = self.client.get(to_idp.headers["location"])  # the IdP approves at once
        assert back.status_code == 302, back.text
        callback = self.client.get(back.headers["location"])
        assert callback.status_code == 302, callback.text
        return self.client.get(callback.headers["location"])

    def approve(self, page: httpx.Response, team: Team | None = None) -> httpx.Response:
        data = {"csrfmiddlewaretoken": csrf_token(page.text)}
        if team is not None:
            data["team"] = str(team.pk)
        else:
            checked = re.search(r'name="team" value="(\d+)"\s*checked', page.text)
            assert checked, page.text
            data["team"] = checked.group(1)
        base = str(page.url).rsplit("/device", 1)[0]
        return self.client.post(f"{base}/device/approve", data=data)

    def deny(self, page: httpx.Response) -> httpx.Response:
        base = str(page.url).rsplit("/device", 1)[0]
        return self.client.post(
            f"{base}/device/deny", data={"csrfmiddlewaretoken": csrf_token(page.text)}
        )


def sign_in_through_browser(
    verification_uri_complete: str, team: Team | None = None
) -> httpx.Response:
    """The whole browser leg: confirm, sign in, approve (the preselected team or `team`)."""
    browser = Browser.open()
    try:
        choose = browser.sign_in(verification_uri_complete)
        assert choose.status_code == 200, choose.text
        done = browser.approve(choose, team)
        assert done.status_code == 200, done.text
        return done
    finally:
        browser.close()
