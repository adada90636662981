"""Gateway roles: memberships written with an audit event, and the user's staff flag kept in step.

Django's admin lets in only staff users, so a user with any membership is staff; what they see
and change there is then decided by their roles (governance.access), never by Django's model
permissions. Losing the last membership takes staff away again, unless the user is a superuser.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.contrib.auth.models import AbstractUser
from django.core.exceptions import ValidationError
from django.db import transaction

from governance.actors import Actor
from governance.models import AuditEvent, Membership, Role, Team
from governance.services import audit, users


def snapshot(membership: Membership) -> dict[str, Any]:
    """The membership's row plus its teams (a many-to-many, which audit.snapshot leaves out)."""
    teams = sorted(membership.teams.values_list("pk", flat=True)) if membership.pk else []
    return {**audit.snapshot(membership), "teams": teams}


def save_membership(
    *, actor: Actor, membership: Membership, teams: Iterable[Team] | None = None
) -> Membership:
    """Create or update a membership (and its team-lead teams, when given), then bring the
    user's staff flag in line. Saving what is already stored writes and records nothing."""
    with transaction.atomic():
        before = None
        if membership.pk is not None:
            # order_by(): Meta.ordering joins the nullable organization, and PostgreSQL
            # refuses FOR UPDATE on the nullable side of an outer join.
            locked = Membership.objects.select_for_update().filter(pk=membership.pk)
            stored = locked.order_by().first()
            before = snapshot(stored) if stored is not None else None
        chosen = list(teams) if teams is not None else list(_current_teams(membership))
        membership.full_clean()
        _check_teams(membership, chosen)
        membership.save()
        if teams is not None:
            membership.teams.set(chosen)
        after = snapshot(membership)
        if before != after:
            audit.record(
                actor=actor,
                verb=AuditEvent.Verb.UPDATED if before else AuditEvent.Verb.CREATED,
                subject=membership,
                before=before,
                after=after,
            )
        sync_staff(actor=actor, user=membership.user)
    return membership


def delete_membership(*, actor: Actor, membership: Membership) -> None:
    with transaction.atomic():
        before = snapshot(membership)
        user = membership.user
        subject_id, subject_repr = str(membership.pk), str(membership)
        # The team links go with the row; they are in `before`.
        membership.delete()
        audit.record(
            actor=actor,
            verb=AuditEvent.Verb.DELETED,
            subject_type=Membership._meta.label,
            subject_id=subject_id,
            subject_repr=subject_repr,
            before=before,
        )
        sync_staff(actor=actor, user=user)


def sync_staff(*, actor: Actor, user: AbstractUser) -> None:
    """Staff exactly when the user holds a membership (superusers stay staff)."""
    user.refresh_from_db(fields=["is_staff", "is_superuser"])
    wanted = user.is_superuser or Membership.objects.filter(user_id=user.pk).exists()
    if user.is_staff == wanted:
        return
    user.is_staff = wanted
    # The user's audit event comes from governance.services.users' signal, as this actor.
    with users.acting_as(actor):
        user.save(update_fields=["is_staff"])


def _current_teams(membership: Membership) -> Iterable[Team]:
    return membership.teams.all() if membership.pk is not None else ()


def _check_teams(membership: Membership, teams: list[Team]) -> None:
    if not teams:
        return
    if membership.role != Role.TEAM_LEAD:
        raise ValidationError({"teams": "only team leads have teams"})
    if membership.organization_id is None:
        return
    elsewhere = sorted(t.name for t in teams if t.organization_id != membership.organization_id)
    if elsewhere:
        raise ValidationError(
            {"teams": f"not teams of {membership.organization}: {', '.join(elsewhere)}"}
        )
