"""Roles: what each one may see and change, row by row (governance/access.py)."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AnonymousUser

from governance.access import Access
from governance.models import (
    ApiToken,
    AuditEvent,
    Budget,
    Membership,
    ModelPrice,
    Organization,
    Provider,
    Role,
    Team,
    VirtualKey,
)
from tests import factories
from tests.roles import World, two_organizations

pytestmark = pytest.mark.django_db
User = get_user_model()


@pytest.fixture
def world() -> World:
    return two_organizations()


def user_with(
    role: Role, organization: Organization | None = None, teams: tuple[Team, ...] = ()
) -> Access:
    user = User.objects.create_user(username=f"{role}-{organization}-{len(teams)}")
    membership = Membership.objects.create(user=user, organization=organization, role=role)
    membership.teams.set(teams)
    return Access.of(User.objects.get(pk=user.pk))


def names(queryset) -> set[str]:
    return {str(getattr(row, "name", row)) for row in queryset}


def test_anonymous_and_role_less_users_see_nothing(world):
    nobody = Access.of(User.objects.create_user(username="nobody"))

    for access in (Access.of(AnonymousUser()), nobody):
        assert not access.visible(VirtualKey.objects.all()).exists()
        assert not access.can_view(world.backend_key)
        assert access.usage_condition() is not None


def test_superuser_sees_and_changes_everything(world):
    access = Access.of(User.objects.create_superuser(username="root", password="x"))

    assert access.visible(VirtualKey.objects.all()).count() == 3
    assert access.can_change(world.rival_key) and access.usage_condition() is None


def test_platform_admin_of_one_organization_stays_inside_it(world):
    access = user_with(Role.PLATFORM_ADMIN, world.acme)

    assert names(access.visible(VirtualKey.objects.all())) == {"vk-backend", "vk-ml"}
    assert access.can_change(world.ml_key)
    assert not access.can_view(world.rival_key)
    # Shared objects are readable, changed only by admins of every organization.
    provider = Provider(name="p", kind="mock")
    assert access.can_view(provider) and not access.can_change(provider)
    assert user_with(Role.PLATFORM_ADMIN).can_change(provider)


def test_finance_changes_budgets_but_only_reads_keys(world):
    access = user_with(Role.FINANCE, world.acme)
    budget = factories.budget(owner=world.backend, amount_micros=1_000_000)

    assert access.can_change(budget)
    assert access.can_view(world.backend_key) and not access.can_change(world.backend_key)
    assert not access.can_change(world.acme)
    assert not access.can_view(factories.budget(owner=world.rival, amount_micros=1))
    price = ModelPrice.objects.first() or ModelPrice(model_pattern="x")
    assert access.can_view(price) and not access.can_change(price)
    assert user_with(Role.FINANCE).can_change(price)  # finance everywhere sets prices


def test_team_lead_sees_only_their_teams(world):
    access = user_with(Role.TEAM_LEAD, world.acme, teams=(world.backend,))
    sub = factories.virtual_key(parent=world.backend_key, name="alice")

    assert names(access.visible(VirtualKey.objects.all())) == {"vk-backend", "alice"}
    assert names(access.visible(Team.objects.all())) == {"backend"}
    assert names(access.visible(Organization.objects.all())) == {"acme"}
    assert access.can_change(sub) and not access.can_change(world.ml_key)
    new_key = VirtualKey(organization=world.acme, team=world.backend, name="new")
    assert access.can_change(new_key)
    assert not access.can_change(VirtualKey(organization=world.acme, team=world.ml, name="x"))


def test_team_lead_changes_key_budgets_but_not_the_teams_own_ceiling(world):
    access = user_with(Role.TEAM_LEAD, world.acme, teams=(world.backend,))
    team_budget = factories.budget(owner=world.backend, amount_micros=10_000_000)
    key_budget = factories.budget(owner=world.backend_key, amount_micros=1_000_000)

    assert access.can_view(team_budget) and not access.can_change(team_budget)
    assert access.can_change(key_budget)
    assert set(access.visible(Budget.objects.all())) == {team_budget, key_budget}


def test_auditor_reads_everything_of_their_organization_and_changes_nothing(world):
    access = user_with(Role.AUDITOR, world.acme)

    assert access.visible(VirtualKey.objects.all()).count() == 2
    assert not access.can_change(world.backend_key)
    assert not access.visible(AuditEvent.objects.all()).exists()  # needs auditor everywhere
    assert user_with(Role.AUDITOR).visible(AuditEvent.objects.all()).exists()


def test_usage_is_read_by_organization_or_led_team(world):
    lead = user_with(Role.TEAM_LEAD, world.acme, teams=(world.backend,))
    finance = user_with(Role.FINANCE, world.acme)

    assert lead.can_read_usage(world.acme.pk, world.backend.pk)
    assert not lead.can_read_usage(world.acme.pk, world.ml.pk)
    assert finance.can_read_usage(world.acme.pk, world.ml.pk)
    assert not finance.can_read_usage(world.globex.pk, world.rival.pk)


def test_api_tokens_are_their_owners_own(world):
    access = user_with(Role.FINANCE, world.acme)
    assert access.user_id is not None
    mine = ApiToken.objects.create(user_id=access.user_id, name="mine", lookup_hash="a" * 64)
    other = User.objects.create_user(username="other")
    theirs = ApiToken.objects.create(user=other, name="theirs", lookup_hash="b" * 64)

    assert access.can_change(mine) and not access.can_view(theirs)
    assert user_with(Role.PLATFORM_ADMIN).can_view(theirs)


def test_a_removed_membership_takes_effect_for_a_fresh_user_object(world):
    access = user_with(Role.PLATFORM_ADMIN, world.acme)
    assert access.user_id is not None
    user = User.objects.get(pk=access.user_id)
    Membership.objects.filter(user=user).delete()

    assert not Access.of(User.objects.get(pk=user.pk)).can_view(world.backend_key)
