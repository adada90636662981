"""Users holding gateway roles, made through the membership service like an admin makes them."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model

from governance.models import Membership, Organization, Role, Team
from governance.services import memberships
from tests.factories import TEST_ACTOR

PASSWORD = "role-test-password-1"


def member(
    username: str,
    role: Role,
    organization: Organization | None = None,
    teams: tuple[Team, ...] = (),
) -> Any:
    """A user with `role` in `organization` (None: every organization), leading `teams`."""
    user_model = get_user_model()
    user = user_model.objects.filter(username=username).first()
    if user is None:
        user = user_model.objects.create_user(username=username, password=PASSWORD)
    memberships.save_membership(
        actor=TEST_ACTOR,
        membership=Membership(user=user, organization=organization, role=role),
        teams=list(teams),
    )
    return user_model.objects.get(pk=user.pk)
