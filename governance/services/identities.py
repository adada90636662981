"""What a single sign-on writes: the user, their identity at the IdP, and their roles.

A user is found by the identity provider's issuer and subject alone (`OIDCIdentity`), never by
email or username, so an IdP asserting someone's email cannot take over their account, and a
break-glass superuser stays a password login. A new subject gets a new, active user with no
usable password. `is_active` is the gateway's: a user switched off in the admin stays off.

At each sign-in the user's email and names follow the IdP, and their "oidc" memberships are
replaced by what the groups claim grants (IdpGroupRole, TeamIdpGroup): groups that map to
nothing leave no role, so no admin. Manual memberships are never touched; a role a manual
membership already gives is not duplicated. Every write is audited, with `sso:<username>` as
the actor.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import User
from django.core.exceptions import SuspiciousOperation
from django.db import IntegrityError, transaction
from django.db.models import QuerySet

from governance.actors import Actor
from governance.identity import oidc
from governance.models import IdpGroupRole, Membership, OIDCIdentity, Role, Team
from governance.services import common, memberships, users

# (organization id or None for everywhere, role) -> the teams led (team leads only).
Grants = dict[tuple[int | None, Role], frozenset[int]]

_USERNAME_UNSAFE = re.compile(r"[^\w.@+-]")
USERNAME_MAX = 150


@dataclass(frozen=True, slots=True)
class Profile:
    """Who the identity provider says signed in."""

    issuer: str
    subject: str
    email: str = ""
    given_name: str = ""
    family_name: str = ""
    groups: tuple[str, ...] = ()

    @classmethod
    def from_claims(cls, claims: Mapping[str, Any], *, issuer: str, groups_claim: str) -> Profile:
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject:
            raise SuspiciousOperation("the identity provider sent no subject (sub)")
        return cls(
            issuer=issuer,
            subject=subject,
            email=_claim(claims, "email", 254),
            given_name=_claim(claims, "given_name", 150),
            family_name=_claim(claims, "family_name", 150),
            groups=oidc.groups_from_claims(claims, groups_claim),
        )


def _claim(claims: Mapping[str, Any], name: str, limit: int) -> str:
    value = claims.get(name)
    return value.strip()[:limit] if isinstance(value, str) else ""


def sign_in(profile: Profile) -> User | None:
    """The user `profile` names, created on first sign-in and brought up to date; None when
    the gateway switched the user off (then nothing is written)."""
    try:
        return _sign_in(profile)
    except IntegrityError:
        # The same subject's first sign-in raced another (two tabs): it exists now.
        return _sign_in(profile)


@transaction.atomic
def _sign_in(profile: Profile) -> User | None:
    identity = (
        OIDCIdentity.objects.select_for_update()
        .select_related("user")
        .filter(issuer=profile.issuer, subject=profile.subject)
        .first()
    )
    if identity is None:
        user = _create_user(profile)
        identity = OIDCIdentity(user=user, issuer=profile.issuer, subject=profile.subject)
    else:
        user = identity.user
        if not user.is_active:
            return None
    actor = actor_for(user)
    _update_user(user, profile, actor)
    identity.email = profile.email
    identity.groups = list(profile.groups)
    common.save_instance(identity, actor=actor)
    replace_memberships(user=user, groups=profile.groups, actor=actor)
    return user


def actor_for(user: Any) -> Actor:
    return Actor(label=f"sso:{user.get_username()}")


def _create_user(profile: Profile) -> User:
    user_model = get_user_model()
    username = _free_username(profile)
    with users.acting_as(Actor(label=f"sso:{username}")):
        user: User = user_model._default_manager.create_user(username, email=profile.email)
    return user


def _free_username(profile: Profile) -> str:
    """The email when no one has it as a username, else one made from the subject (valid for
    Django's username validator, so the user stays editable in the admin)."""
    digest = hashlib.sha256(f"{profile.issuer} {profile.subject}".encode()).hexdigest()[:32]
    candidates = [
        profile.email if not _USERNAME_UNSAFE.search(profile.email) else "",
        "sso." + _USERNAME_UNSAFE.sub("_", profile.subject),
        f"sso.{digest}",
    ]
    taken = get_user_model()._default_manager.filter(username__in=candidates)
    used = set(taken.values_list("username", flat=True))
    for candidate in candidates:
        if candidate and len(candidate) <= USERNAME_MAX and candidate not in used:
            return candidate
    return f"sso.{digest}"


def _update_user(user: User, profile: Profile, actor: Actor) -> None:
    values = {
        "email": profile.email,
        "first_name": profile.given_name,
        "last_name": profile.family_name,
    }
    changed = [name for name, value in values.items() if getattr(user, name) != value]
    if not changed:
        return
    for name in changed:
        setattr(user, name, values[name])
    with users.acting_as(actor):  # audited by the user signals (governance/services/users.py)
        user.save(update_fields=changed)


# --- groups -> roles and teams -------------------------------------------------------------


def teams_for_groups(groups: Iterable[str]) -> QuerySet[Team]:
    """The teams whose IdP groups include one of `groups` (a team lead's teams; the Claude
    Code sign-in's choice of teams)."""
    return (
        Team.objects.filter(idp_groups__group__in=list(groups))
        .select_related("organization")
        .distinct()
    )


def grants_for_groups(groups: Iterable[str]) -> Grants:
    """The roles (and led teams) that `groups` grant. A team lead grant counts only with a
    team to lead: the lead's groups must also name one of the organization's teams."""
    names = list(dict.fromkeys(groups))
    if not names:
        return {}
    rows = IdpGroupRole.objects.filter(group__in=names).values_list("organization_id", "role")
    grants: Grants = {(org_id, Role(role)): frozenset() for org_id, role in rows}
    teams = list(teams_for_groups(names).values_list("id", "organization_id"))
    for org_id, role in list(grants):
        if role != Role.TEAM_LEAD:
            continue
        led = frozenset(team for team, team_org in teams if org_id in (None, team_org))
        if led:
            grants[(org_id, role)] = led
        else:
            del grants[(org_id, role)]
    return grants


@transaction.atomic
def replace_memberships(*, user: Any, groups: Iterable[str], actor: Actor) -> None:
    """Make the user's "oidc" memberships exactly what `groups` grant; manual ones stay."""
    grants = grants_for_groups(groups)
    stored = list(Membership.objects.select_for_update().filter(user=user).order_by("id"))
    manual = {(m.organization_id, m.role) for m in stored if m.source == Membership.Source.MANUAL}
    sso = {
        (m.organization_id, Role(m.role)): m for m in stored if m.source == Membership.Source.OIDC
    }
    for key, membership in sso.items():
        if key not in grants or key in manual:
            memberships.delete_membership(actor=actor, membership=membership)
    for key, led in grants.items():
        if key in manual:
            continue
        organization_id, role = key
        membership = sso.get(key) or Membership(
            user=user, organization_id=organization_id, role=role, source=Membership.Source.OIDC
        )
        teams = Team.objects.filter(pk__in=led).order_by("pk") if led else Team.objects.none()
        memberships.save_membership(actor=actor, membership=membership, teams=list(teams))
    # Staff (the admin's door) exactly when a role is held, also when nothing changed here.
    memberships.sync_staff(actor=actor, user=user)
