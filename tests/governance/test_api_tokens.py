"""API tokens: shown once, hashed at rest, expiring, revocable, with last-used time."""

from __future__ import annotations

import datetime as dt
from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.utils import timezone

from governance.actors import Actor
from governance.models import ApiToken, AuditEvent
from governance.services import tokens

pytestmark = pytest.mark.django_db
ACTOR = Actor.system("tests")


@pytest.fixture
def user():
    return get_user_model().objects.create_user(username="ops")


def test_a_token_is_stored_hashed_and_authenticates_its_user(user):
    issued = tokens.create_token(actor=ACTOR, user=user, name="ci")

    stored = ApiToken.objects.get(pk=issued.token.pk)
    assert issued.secret.startswith("gwapi-") and issued.secret not in repr(issued)
    assert stored.lookup_hash != issued.secret and stored.prefix == issued.secret[:12]
    found = tokens.authenticate(issued.secret)
    assert found is not None and found.user == user and found.last_used_at is not None
    assert AuditEvent.objects.filter(subject_type="governance.ApiToken").exists()


def test_revoked_expired_and_unknown_tokens_are_refused(user):
    revoked = tokens.create_token(actor=ACTOR, user=user, name="a")
    tokens.revoke_token(actor=ACTOR, token=revoked.token)
    expired = tokens.create_token(
        actor=ACTOR, user=user, name="b", expires_at=timezone.now() - dt.timedelta(seconds=1)
    )

    assert tokens.authenticate(revoked.secret) is None
    assert tokens.authenticate(expired.secret) is None
    assert tokens.authenticate("gwapi-not-a-token") is None
    assert tokens.authenticate("sk-gw-a-virtual-key") is None


def test_a_deactivated_user_s_token_stops_working(user):
    issued = tokens.create_token(actor=ACTOR, user=user, name="a")
    user.is_active = False
    user.save()

    assert tokens.authenticate(issued.secret) is None


def test_create_api_token_prints_the_token_alone_on_its_last_line(user):
    out = StringIO()
    call_command("create_api_token", "ops", "--name", "onboarding", stdout=out)

    last = out.getvalue().strip().splitlines()[-1]
    assert last.startswith("gwapi-") and " " not in last
    found = tokens.authenticate(last)
    assert found is not None and found.name == "onboarding"
