"""Memberships through their service: audited, checked, and keeping the staff flag in step."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError

from governance.models import AuditEvent, Membership, Role
from governance.services import memberships
from tests import factories
from tests.factories import TEST_ACTOR
from tests.roles import member

pytestmark = pytest.mark.django_db
User = get_user_model()


def _events(membership_pk: int) -> list[AuditEvent]:
    return list(
        AuditEvent.objects.filter(
            subject_type="governance.Membership", subject_id=str(membership_pk)
        ).order_by("id")
    )


def test_a_membership_makes_its_user_staff_and_losing_the_last_one_clears_it():
    acme = factories.organization(name="acme")
    user = member("fin", Role.FINANCE, acme)
    assert user.is_staff
    auditor = Membership.objects.create(user=user, organization=None, role=Role.AUDITOR)

    memberships.delete_membership(
        actor=TEST_ACTOR, membership=Membership.objects.get(user=user, role=Role.FINANCE)
    )
    assert User.objects.get(pk=user.pk).is_staff  # still an auditor
    memberships.delete_membership(actor=TEST_ACTOR, membership=auditor)
    assert not User.objects.get(pk=user.pk).is_staff


def test_a_superuser_stays_staff_without_memberships():
    root = User.objects.create_superuser("root", password="x")
    membership = Membership(user=root, role=Role.AUDITOR)
    memberships.save_membership(actor=TEST_ACTOR, membership=membership)

    memberships.delete_membership(actor=TEST_ACTOR, membership=membership)

    assert User.objects.get(pk=root.pk).is_staff


def test_membership_writes_are_audited_with_their_teams():
    acme = factories.organization(name="acme")
    backend = factories.team(organization=acme, name="backend")
    lead = member("lead", Role.TEAM_LEAD, acme, teams=(backend,))
    membership = Membership.objects.get(user=lead)

    memberships.save_membership(actor=TEST_ACTOR, membership=membership, teams=[])
    memberships.save_membership(actor=TEST_ACTOR, membership=membership, teams=[])  # no change
    pk = membership.pk
    memberships.delete_membership(actor=TEST_ACTOR, membership=membership)

    created, updated, deleted = _events(pk)
    assert created.after == {**(created.after or {}), "teams": [backend.pk], "role": "team_lead"}
    assert (updated.before or {})["teams"] == [backend.pk] and (updated.after or {})["teams"] == []
    assert deleted.verb == AuditEvent.Verb.DELETED and (deleted.before or {})["teams"] == []
    # The staff flag's change is the user's own event, by the same actor.
    staffed = AuditEvent.objects.filter(subject_type="auth.User", subject_id=str(lead.pk))
    assert {e.actor for e in staffed if (e.after or {}).get("is_staff") is True} == {"tests"}


def test_teams_are_for_team_leads_and_from_their_organization():
    acme = factories.organization(name="acme")
    globex = factories.organization(name="globex")
    rival = factories.team(organization=globex, name="rival")
    user = User.objects.create_user("someone")

    with pytest.raises(ValidationError, match="not teams of acme: rival"):
        memberships.save_membership(
            actor=TEST_ACTOR,
            membership=Membership(user=user, organization=acme, role=Role.TEAM_LEAD),
            teams=[rival],
        )
    with pytest.raises(ValidationError, match="only team leads have teams"):
        memberships.save_membership(
            actor=TEST_ACTOR,
            membership=Membership(user=user, organization=globex, role=Role.FINANCE),
            teams=[rival],
        )
    assert not Membership.objects.exists() and not User.objects.get(pk=user.pk).is_staff
