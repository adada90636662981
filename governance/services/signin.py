"""What the Claude Code sign-in writes: device grants, sessions (refresh-token families), the
developers' sub-keys, and their deprovisioning (governance/signin/ serves the protocol).

Identity -> governance: a developer signs in as the identity provider's subject (the admin
SSO's user, governance/services/identities.py) and is charged to one of the teams their groups
map to (TeamIdpGroup), through a per-developer sub-key of that team's sign-in key (TeamSignIn,
else the team's only active top-level key). The sub-key's secret is random and never shown:
the access token names it by its lookup hash. So every budget, limit, model policy, MCP grant,
ledger row and dashboard applies to a signed-in developer unchanged.

Every refresh checks again that the developer may be there: switched on in the gateway, still
mapped to the team (groups re-read from the identity provider when it issued a refresh token),
their key not revoked. When the answer is no, the sign-in deprovisions them: their sub-key is
revoked (so the proxy refuses their access token at once) and their sessions end.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from dataclasses import dataclass, field

from django.conf import settings
from django.contrib.auth.models import User
from django.core.cache import cache
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from governance import crypto, signin_tokens
from governance.actors import Actor
from governance.models import (
    AuditEvent,
    DeveloperKey,
    DeviceGrant,
    SignInSession,
    Team,
    TeamSignIn,
    VirtualKey,
)
from governance.services import audit, identities, keys
from governance.signin import codes, idp

logger = logging.getLogger(__name__)

ACTOR = Actor.system("claude-code-signin")
DEVICE_CODE_SECONDS = 600
POLL_INTERVAL_SECONDS = 5
SLOW_DOWN_STEP_SECONDS = 5  # RFC 8628 3.5
# Polls closer together than the interval by more than this count as too fast (replicas'
# clocks and the client's own timing differ a little).
POLL_SLACK_SECONDS = 1.0
# The refresh token replaced this recently may come once more without revoking its session:
# two terminals of one machine share the stored credential and renew at the same moment; the
# loser gets invalid_grant and carries on with what the winner saved.
REUSE_GRACE = dt.timedelta(seconds=60)
REFRESH_LOCK_SECONDS = 60
KEEP_EXPIRED_GRANTS = dt.timedelta(hours=1)
MAX_KEY_NAME = 100
# Rows read with their related rows are locked alone: PostgreSQL refuses FOR UPDATE across the
# nullable side of an outer join, and the related rows need no lock.
OWN_ROW = ("self",)


class SignInRefused(Exception):
    """A developer may not sign in for a team (or any): the message says why, to them."""


class TokenError(Exception):
    """An RFC 6749 / 8628 error of the token endpoint."""

    def __init__(self, error: str, description: str = "", status: int = 400) -> None:
        super().__init__(error)
        self.error = error
        self.description = description
        self.status = status


@dataclass(frozen=True, slots=True)
class Tokens:
    access_token: str = field(repr=False)
    refresh_token: str = field(repr=False)
    expires_in: int


# --- teams and developer keys --------------------------------------------------------------


def signin_parent(team: Team) -> VirtualKey:
    """The key a team's developers get sub-keys of; raises SignInRefused when there is none."""
    now = timezone.now()
    configured = TeamSignIn.objects.filter(team=team).select_related("signin_key").first()
    if configured is not None and configured.signin_key is not None:
        key = configured.signin_key
        if key.revoked_at is not None or (key.expires_at is not None and key.expires_at <= now):
            raise SignInRefused(f"the sign-in key of team {team} is revoked or expired")
        return key
    candidates = list(
        VirtualKey.objects.filter(team=team, parent__isnull=True, revoked_at__isnull=True)
        .filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now))
        .order_by("pk")[:2]
    )
    if len(candidates) != 1:
        what = "no active key" if not candidates else "several keys and no sign-in key chosen"
        raise SignInRefused(f"team {team} has {what}: an administrator must choose its sign-in key")
    return candidates[0]


@dataclass(frozen=True, slots=True)
class TeamChoice:
    """A team the developer's groups map to, with the key the session would be charged to."""

    team: Team
    key_label: str = ""
    problem: str = ""
    existing: bool = False  # the developer already has a live sub-key here

    @property
    def ready(self) -> bool:
        return not self.problem


def team_choices(user: User, groups: list[str] | tuple[str, ...]) -> list[TeamChoice]:
    teams = identities.teams_for_groups(groups).order_by("organization__name", "name")
    return [_choice(user, team) for team in teams]


def _choice(user: User, team: Team) -> TeamChoice:
    try:
        parent = signin_parent(team)
        link = _link(user, team)
        _check_not_blocked(link, team)
    except SignInRefused as refused:
        return TeamChoice(team=team, problem=str(refused))
    if link is not None and link.key.revoked_at is None and link.key.parent_id == parent.pk:
        return TeamChoice(team=team, key_label=str(link.key), existing=True)
    return TeamChoice(team=team, key_label=f"{parent.name}/{_key_name(parent, user)} (new)")


def _link(user: User, team: Team, *, lock: bool = False) -> DeveloperKey | None:
    rows = DeveloperKey.objects.select_related("key__parent").filter(user=user, team=team)
    return (rows.select_for_update(of=OWN_ROW).order_by() if lock else rows).first()


def _check_not_blocked(link: DeveloperKey | None, team: Team) -> None:
    """Refuse a developer whose own sub-key an administrator revoked. A sub-key revoked with its
    parent (the team's key retired) or by the sign-in itself (deprovisioning) is no such block:
    the next sign-in makes a new one."""
    if link is None or link.key.revoked_at is None or link.deprovisioned_at is not None:
        return
    parent = link.key.parent
    if parent is None or parent.revoked_at is None or link.key.revoked_at < parent.revoked_at:
        raise SignInRefused(
            f"your Claude Code key for team {team} was revoked by an administrator; ask them to "
            "remove it from the Claude Code developer keys to let you sign in again"
        )


def developer_key(*, user: User, team: Team) -> VirtualKey:
    """The developer's sub-key for `team`, created (or replaced) when needed; raises
    SignInRefused. Runs inside the caller's transaction."""
    parent = signin_parent(team)
    link = _link(user, team, lock=True)
    _check_not_blocked(link, team)
    if link is not None and link.key.revoked_at is None:
        if link.key.parent_id == parent.pk:
            return link.key
        keys.revoke_key(actor=ACTOR, key=link.key, reason="the team's sign-in key changed")
    key = keys.create_key(
        actor=ACTOR,
        organization=parent.organization,
        parent=parent,
        name=_key_name(parent, user),
        owner=(user.email or user.get_username())[:200],
    ).key  # the secret is dropped here: access tokens name the key by its lookup hash
    if link is None:
        link = DeveloperKey(user=user, team=team, key=key)
    link.key = key
    link.deprovisioned_at = None
    link.save()
    return key


def _key_name(parent: VirtualKey, user: User) -> str:
    """The developer's email (free under the parent), else their username, made unique."""
    base = (user.email or user.get_username()).strip()
    if not base or len(base) > MAX_KEY_NAME - 4 or any(ch.isspace() or ch == "/" for ch in base):
        base = "sso-" + hashlib.sha256(user.get_username().encode()).hexdigest()[:16]
    taken = set(
        VirtualKey.objects.filter(parent=parent, name__startswith=base).values_list(
            "name", flat=True
        )
    )
    if base not in taken:
        return base
    return next(f"{base}-{n}" for n in range(2, len(taken) + 3) if f"{base}-{n}" not in taken)


def deprovision(*, user: User, team: Team | None, reason: str) -> None:
    """Revoke the developer's sub-key (of `team`, or of every team) and end their sessions."""
    now = timezone.now()
    with transaction.atomic():
        links = (
            DeveloperKey.objects.select_for_update(of=OWN_ROW)
            .select_related("key")
            .filter(user=user)
            .order_by()
        )
        if team is not None:
            links = links.filter(team=team)
        for link in links:
            if link.key.revoked_at is None:
                keys.revoke_key(actor=ACTOR, key=link.key, reason=f"Claude Code sign-in: {reason}")
                link.deprovisioned_at = now
                link.save(update_fields=["deprovisioned_at", "updated_at"])
        sessions = SignInSession.objects.filter(user=user, revoked_at__isnull=True)
        if team is not None:
            sessions = sessions.filter(team=team)
        for session in sessions.select_for_update():
            _revoke_session(session, reason)


def _revoke_session(session: SignInSession, reason: str) -> None:
    session.revoked_at = timezone.now()
    session.revoked_reason = reason[:200]
    session.save(update_fields=["revoked_at", "revoked_reason", "updated_at"])
    audit.record(
        actor=ACTOR,
        verb=AuditEvent.Verb.UPDATED,
        subject=session,
        after={"revoked_reason": session.revoked_reason},
        note=f"Claude Code session ended: {session.revoked_reason}",
    )


def revoke_sessions(sessions: list[SignInSession], *, actor: Actor, reason: str) -> int:
    """End sessions from the admin: their refresh tokens stop working at once."""
    ended = 0
    with transaction.atomic():
        for session in SignInSession.objects.select_for_update().filter(
            pk__in=[s.pk for s in sessions], revoked_at__isnull=True
        ):
            session.revoked_at = timezone.now()
            session.revoked_reason = reason[:200]
            session.save(update_fields=["revoked_at", "revoked_reason", "updated_at"])
            audit.record(actor=actor, verb=AuditEvent.Verb.UPDATED, subject=session, note=reason)
            ended += 1
    return ended


# --- device grants (RFC 8628) --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeviceStart:
    device_code: str = field(repr=False)
    user_code: str
    expires_in: int
    interval: int


def start_device_grant() -> DeviceStart:
    now = timezone.now()
    DeviceGrant.objects.filter(expires_at__lt=now - KEEP_EXPIRED_GRANTS).delete()
    device_code, user_code = codes.device_code(), codes.user_code()
    DeviceGrant.objects.create(
        device_code_hash=codes.digest(device_code),
        user_code_hash=codes.user_code_digest(user_code),
        created_at=now,
        expires_at=now + dt.timedelta(seconds=DEVICE_CODE_SECONDS),
        interval=POLL_INTERVAL_SECONDS,
    )
    return DeviceStart(device_code, user_code, DEVICE_CODE_SECONDS, POLL_INTERVAL_SECONDS)


def pending_grant(user_code: str) -> DeviceGrant | None:
    digest = codes.user_code_digest(user_code)
    if not digest:
        return None
    return (
        DeviceGrant.objects.filter(
            user_code_hash=digest,
            status=DeviceGrant.Status.PENDING,
            expires_at__gt=timezone.now(),
        )
        .order_by("-created_at")
        .first()
    )


def live_grant(grant_id: int) -> DeviceGrant | None:
    return DeviceGrant.objects.filter(
        pk=grant_id, status=DeviceGrant.Status.PENDING, expires_at__gt=timezone.now()
    ).first()


def record_sign_in(grant: DeviceGrant, signed_in: idp.SignedIn) -> User:
    """Who signed in for `grant` at the identity provider (the admin SSO's user, brought up to
    date). Raises SignInRefused, and denies the grant, when the gateway switched them off or
    someone else already signed in for this code."""
    user = identities.sign_in(signed_in.profile)
    if user is None:
        deny(grant)
        raise SignInRefused("your gateway account is switched off")
    profile = signed_in.profile
    credentials = {"refresh_token": signed_in.refresh_token} if signed_in.refresh_token else {}
    recorded = (
        DeviceGrant.objects.filter(pk=grant.pk, status=DeviceGrant.Status.PENDING)
        .filter(Q(user__isnull=True) | Q(user=user))
        .update(
            user=user,
            subject=profile.subject,
            email=profile.email,
            groups=list(profile.groups),
            credentials_encrypted=crypto.encrypt_credentials(credentials),
        )
    )
    if not recorded:
        # Two people signed in for one code: the device gets neither.
        deny(grant)
        raise SignInRefused("someone else signed in with this code: start again from Claude Code")
    grant.refresh_from_db()
    return user


def approve(grant: DeviceGrant, team_id: int) -> VirtualKey:
    """The developer chose `team_id`: their sub-key is made ready and the grant approved."""
    try:
        return _approve(grant, team_id)
    except IntegrityError:
        # Their first sign-in for the team raced another (two machines): the key exists now.
        return _approve(grant, team_id)


def _approve(grant: DeviceGrant, team_id: int) -> VirtualKey:
    with transaction.atomic():
        locked = (
            DeviceGrant.objects.select_for_update(of=OWN_ROW)
            .filter(pk=grant.pk, status=DeviceGrant.Status.PENDING, expires_at__gt=timezone.now())
            .select_related("user")
            .first()
        )
        if locked is None or locked.user is None:
            raise SignInRefused("this sign-in has expired: start it again from Claude Code")
        choice = next(
            (c for c in team_choices(locked.user, locked.groups) if c.team.pk == team_id), None
        )
        if choice is None:
            raise SignInRefused("your groups do not map to that team")
        if not choice.ready:
            raise SignInRefused(choice.problem)
        key = developer_key(user=locked.user, team=choice.team)
        locked.status = DeviceGrant.Status.APPROVED
        locked.team = choice.team
        locked.key = key
        locked.save(update_fields=["status", "team", "key"])
    return key


def deny(grant: DeviceGrant) -> None:
    DeviceGrant.objects.filter(pk=grant.pk, status=DeviceGrant.Status.PENDING).update(
        status=DeviceGrant.Status.DENIED, credentials_encrypted=""
    )


# --- the token endpoint --------------------------------------------------------------------


def _signing_key() -> bytes:
    return signin_tokens.signing_key(settings.GATEWAY_SIGNIN_KEY, settings.SECRET_KEY)


def _access_token(session: SignInSession, key: VirtualKey) -> tuple[str, int]:
    lifetime = dt.timedelta(minutes=settings.GATEWAY_SIGNIN_TOKEN_MINUTES)
    token = signin_tokens.mint(
        key_lookup_hash=key.lookup_hash,
        subject=session.subject,
        email=session.email,
        groups=tuple(str(group) for group in session.groups),
        key=_signing_key(),
        now=timezone.now(),
        ttl=lifetime,
    )
    return token, int(lifetime.total_seconds())


def redeem_device_code(device_code: str, *, client: str = "") -> Tokens:
    """One poll of the device-code grant: tokens once approved, else an RFC 8628 error."""
    with transaction.atomic():
        outcome = _poll(device_code, client)
    if isinstance(outcome, TokenError):
        raise outcome
    return outcome


def _poll(device_code: str, client: str) -> Tokens | TokenError:
    now = timezone.now()
    grant = (
        DeviceGrant.objects.select_for_update(of=OWN_ROW)
        .select_related("user", "team", "key")
        .filter(device_code_hash=codes.digest(device_code))
        .first()
    )
    if grant is None or grant.status == DeviceGrant.Status.CONSUMED or grant.expires_at <= now:
        return TokenError("expired_token", "the device code is unknown, used or expired")
    elapsed = (now - grant.last_polled_at).total_seconds() if grant.last_polled_at else None
    grant.last_polled_at = now
    if elapsed is not None and elapsed < grant.interval - POLL_SLACK_SECONDS:
        grant.interval += SLOW_DOWN_STEP_SECONDS
        grant.save(update_fields=["last_polled_at", "interval"])
        return TokenError("slow_down", f"poll at most every {grant.interval} s", status=429)
    if grant.status == DeviceGrant.Status.PENDING:
        grant.save(update_fields=["last_polled_at"])
        return TokenError("authorization_pending")
    approved = grant.status == DeviceGrant.Status.APPROVED
    grant.status = DeviceGrant.Status.CONSUMED  # a device code answers once (then expired_token)
    grant.save(update_fields=["last_polled_at", "status"])
    if not approved or grant.key is None or grant.user is None:
        return TokenError("access_denied", "the sign-in was denied in the browser")
    return _open_session(grant, client)


def _open_session(grant: DeviceGrant, client: str) -> Tokens | TokenError:
    assert grant.user is not None and grant.team is not None and grant.key is not None
    key = VirtualKey.objects.get(pk=grant.key.pk)
    if key.revoked_at is not None:
        return TokenError("access_denied", "the key of this sign-in was revoked meanwhile")
    refresh = codes.new_refresh_token(codes.session_id())
    idp_refresh = crypto.decrypt_credentials(grant.credentials_encrypted).get("refresh_token")
    now = timezone.now()
    session = SignInSession(
        public_id=refresh.session_id,
        user=grant.user,
        team=grant.team,
        key=key,
        subject=grant.subject,
        email=grant.email,
        groups=list(grant.groups),
        refresh_hash=refresh.digest,
        refreshed_at=now,
        credentials_encrypted=grant.credentials_encrypted,
        ends_at=None if idp_refresh else now + dt.timedelta(seconds=_session_seconds()),
        client=client[:200],
    )
    session.save()
    grant.credentials_encrypted = ""
    grant.save(update_fields=["credentials_encrypted"])
    audit.record(
        actor=identities.actor_for(grant.user),
        verb=AuditEvent.Verb.CREATED,
        subject=session,
        after={"team": str(grant.team), "key": str(key), "client": session.client},
        note="Claude Code signed in",
    )
    access_token, expires_in = _access_token(session, key)
    return Tokens(access_token, str(refresh), expires_in)


def _session_seconds() -> int:
    return int(getattr(settings, "GATEWAY_OIDC_SESSION_SECONDS", 8 * 3600))


def refresh(refresh_token: str, *, client: str = "") -> Tokens:
    """The refresh grant: a new access token and a new refresh token (the presented one is
    replaced), after checking again that the developer may be there."""
    token = codes.parse_refresh_token(refresh_token)
    session = (
        SignInSession.objects.select_related("user", "team")
        .filter(public_id=token.session_id)
        .first()
        if token is not None
        else None
    )
    if token is None or session is None:
        raise TokenError("invalid_grant", "unknown refresh token")
    _check_presented(session, token)
    lock = f"signin:refreshing:{session.public_id}"
    if not cache.add(lock, 1, timeout=REFRESH_LOCK_SECONDS):
        raise TokenError("invalid_grant", "this session is being refreshed by another request")
    try:
        identity = _current_identity(session)
        with transaction.atomic():
            outcome = _rotate(session.pk, token, identity, client)
    finally:
        cache.delete(lock)
    if isinstance(outcome, TokenError):
        raise outcome
    return outcome


def _check_presented(session: SignInSession, token: codes.RefreshToken) -> None:
    if session.revoked_at is not None:
        raise TokenError("invalid_grant", "the session has ended")
    digest = token.digest
    if digest == session.refresh_hash:
        if session.ends_at is not None and session.ends_at <= timezone.now():
            raise TokenError("invalid_grant", "the session has ended: sign in again")
        return
    recently = session.rotated_at is not None and timezone.now() - session.rotated_at < REUSE_GRACE
    if digest == session.previous_refresh_hash and recently:
        raise TokenError("invalid_grant", "this refresh token was just replaced")
    # A replaced refresh token came back: whoever holds the session's tokens is not alone.
    with transaction.atomic():
        locked = SignInSession.objects.select_for_update().get(pk=session.pk)
        if locked.revoked_at is None:
            _revoke_session(locked, "a replaced refresh token was presented again")
    logger.warning("Claude Code session %s revoked: refresh token reused", session.pk)
    raise TokenError("invalid_grant", "refresh token reused: the session is revoked")


@dataclass(frozen=True, slots=True)
class _Identity:
    """Who the developer is now: from the identity provider, or the session's own record."""

    profile: identities.Profile | None  # None: no IdP refresh token, the session's groups hold
    idp_refresh_token: str = field(repr=False, default="")


def _current_identity(session: SignInSession) -> _Identity:
    stored = crypto.decrypt_credentials(session.credentials_encrypted).get("refresh_token", "")
    if not stored:
        return _Identity(profile=None)
    try:
        signed_in = idp.refresh(refresh_token=stored, subject=session.subject)
    except idp.IdpUnavailable as error:
        logger.warning("Claude Code refresh: the identity provider is unavailable: %s", error)
        raise TokenError(
            "temporarily_unavailable", "the identity provider cannot be reached", status=503
        ) from None
    except idp.IdpRefused as error:
        with transaction.atomic():
            locked = SignInSession.objects.select_for_update().get(pk=session.pk)
            if locked.revoked_at is None:
                _revoke_session(locked, f"the identity provider refused the refresh ({error})")
        raise TokenError("invalid_grant", "sign in again: the identity provider refused") from None
    return _Identity(profile=signed_in.profile, idp_refresh_token=signed_in.refresh_token)


def _rotate(
    session_id: int, token: codes.RefreshToken, identity: _Identity, client: str
) -> Tokens | TokenError:
    session = (
        SignInSession.objects.select_for_update(of=OWN_ROW)
        .select_related("user", "team")
        .get(pk=session_id)
    )
    if session.revoked_at is not None or session.refresh_hash != token.digest:
        return TokenError("invalid_grant", "this refresh token was just replaced")
    refused = _check_developer(session, identity)
    if refused:
        return TokenError("invalid_grant", refused)
    try:
        key = developer_key(user=session.user, team=session.team)
    except SignInRefused as error:
        _revoke_session(session, str(error))
        return TokenError("invalid_grant", str(error))
    new = codes.new_refresh_token(session.public_id)
    now = timezone.now()
    session.previous_refresh_hash = session.refresh_hash
    session.refresh_hash = new.digest
    session.rotated_at = session.refreshed_at = now
    session.key = key
    session.client = client[:200] or session.client
    if identity.profile is not None:
        session.email = identity.profile.email
        session.groups = list(identity.profile.groups)
        session.credentials_encrypted = crypto.encrypt_credentials(
            {"refresh_token": identity.idp_refresh_token}
        )
    session.save()
    access_token, expires_in = _access_token(session, key)
    return Tokens(access_token, str(new), expires_in)


def _check_developer(session: SignInSession, identity: _Identity) -> str:
    """Why the developer may no longer be signed in for the session's team ("" if they may);
    deprovisions them when so."""
    user: User | None = session.user
    if identity.profile is not None:
        user = identities.sign_in(identity.profile)  # email, groups and roles follow the IdP
        if user is not None and user.pk != session.user_id:
            user = None
    if user is None or not session.user.is_active or not user.is_active:
        deprovision(user=session.user, team=None, reason="the user is switched off")
        return "your gateway account is switched off"
    groups = identity.profile.groups if identity.profile is not None else session.groups
    if not identities.teams_for_groups(groups).filter(pk=session.team_id).exists():
        deprovision(
            user=session.user, team=session.team, reason="no longer in the team's IdP groups"
        )
        return f"you are no longer a member of team {session.team}"
    return ""


def revoke(token: str) -> None:
    """RFC 7009: a refresh token ends its session; anything else is ignored (access tokens are
    short-lived and stateless). Unknown tokens are not an error."""
    parsed = codes.parse_refresh_token(token)
    if parsed is None:
        return
    digest = parsed.digest
    with transaction.atomic():
        session = (
            SignInSession.objects.select_for_update()
            .filter(public_id=parsed.session_id, revoked_at__isnull=True)
            .first()
        )
        if session is not None and digest in (session.refresh_hash, session.previous_refresh_hash):
            _revoke_session(session, "signed out (/logout)")
