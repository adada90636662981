"""Claude Code sign-in in the admin: a team's sign-in key and managed settings on its page,
sessions ended by an action, developer keys listed and forgotten."""

from __future__ import annotations

import json

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from governance.models import AuditEvent, DeveloperKey, SignInSession, TeamSignIn
from governance.services import keys
from tests import factories
from tests.governance.test_admin import admin_url, form_data
from tests.signin_support import ACTOR

pytestmark = pytest.mark.django_db


@pytest.fixture
def team_page(admin_client):
    team = factories.team(name="backend")
    key = factories.virtual_key(team=team, name="vk-backend")
    factories.virtual_key(team=factories.team(organization=team.organization), name="vk-other")
    url = admin_url(type(team), "change", team.pk)
    return team, key, url


def with_signin(admin_client, url: str, **fields: str) -> dict[str, str]:
    data = form_data(admin_client.get(url).content.decode())
    data.update({"signin-TOTAL_FORMS": "1", **{f"signin-0-{k}": v for k, v in fields.items()}})
    return data


def test_the_team_page_sets_the_sign_in_key_and_managed_settings(admin_client, team_page):
    _, key, url = team_page
    page = admin_client.get(url).content.decode()
    assert "Claude Code sign-in" in page
    assert "vk-other" not in page  # only the team's own keys are offered

    response = admin_client.post(
        url,
        with_signin(
            admin_client,
            url,
            signin_key=str(key.pk),
            managed_settings=json.dumps({"availableModels": ["claude-sonnet-4-6"]}),
        ),
    )

    assert response.status_code == 302, response.content.decode()[:2000]
    saved = TeamSignIn.objects.get()
    assert (saved.signin_key, saved.managed_settings) == (
        key,
        {"availableModels": ["claude-sonnet-4-6"]},
    )
    assert AuditEvent.objects.filter(subject_type="governance.TeamSignIn").exists()


def test_a_document_claude_code_would_misread_is_a_form_error(admin_client, team_page):
    _, _, url = team_page

    response = admin_client.post(
        url,
        with_signin(admin_client, url, managed_settings=json.dumps({"env": {"FLAG": True}})),
    )

    assert response.status_code == 200
    assert "env.FLAG: write true/false in quotes" in response.content.decode()
    assert not TeamSignIn.objects.exists()


def signed_in_developer() -> SignInSession:
    team = factories.team(name="ml")
    parent = factories.virtual_key(team=team, name="vk-ml")
    sub_key = factories.virtual_key(parent=parent, name="bob@acme.dev")
    user = get_user_model().objects.create_user("bob@acme.dev")
    DeveloperKey.objects.create(user=user, team=team, key=sub_key)
    return SignInSession.objects.create(
        public_id="a" * 32,
        user=user,
        team=team,
        key=sub_key,
        subject="u-bob",
        refresh_hash="b" * 64,
        refreshed_at=timezone.now(),
    )


def test_ending_sessions_in_the_admin_refuses_their_refresh_tokens(admin_client):
    session = signed_in_developer()

    response = admin_client.post(
        admin_url(SignInSession, "changelist"),
        {"action": "end_sessions", "_selected_action": [session.pk]},
    )

    assert response.status_code == 302
    session.refresh_from_db()
    assert session.revoked_at is not None and "ended in the admin" in session.revoked_reason
    assert AuditEvent.objects.filter(subject_type="governance.SignInSession").exists()


def test_developer_keys_and_sessions_are_listed_and_a_key_can_be_forgotten(admin_client):
    session = signed_in_developer()
    keys.revoke_key(actor=ACTOR, key=session.key)
    link = DeveloperKey.objects.get()

    listing = admin_client.get(admin_url(DeveloperKey, "changelist")).content.decode()
    sessions = admin_client.get(admin_url(SignInSession, "changelist"))
    forgotten = admin_client.post(admin_url(DeveloperKey, "delete", link.pk), {"post": "yes"})

    assert "revoked by an administrator" in listing
    assert sessions.status_code == 200
    assert forgotten.status_code == 302
    assert not DeveloperKey.objects.exists()
    assert AuditEvent.objects.filter(
        subject_type="governance.DeveloperKey", verb=AuditEvent.Verb.DELETED
    ).exists()
