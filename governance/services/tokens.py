"""API tokens: issue, revoke, authenticate. Secrets are returned once and stored only hashed.

A token acts as its user, with the user's roles (governance/access.py). It is sent as
`Authorization: Bearer <token>` to the REST API, and as `x-api-key` to the routes that mirror
Anthropic's Admin API.
"""

from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import dataclass

from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone

from governance.actors import Actor
from governance.keyhash import hash_secret
from governance.models import ApiToken, AuditEvent
from governance.services import audit

TOKEN_PREFIX = "gwapi-"  # noqa: S105 (a format marker, not a secret)
VISIBLE_PREFIX_LENGTH = 12
# last_used_at is written at most this often per token: authentication stays a read.
LAST_USED_RESOLUTION = dt.timedelta(minutes=1)


@dataclass(frozen=True, slots=True)
class IssuedToken:
    """A token together with its secret; the only moment the secret exists in clear."""

    token: ApiToken
    secret: str

    def __repr__(self) -> str:  # keep the secret out of tracebacks and logs
        return f"IssuedToken(token={self.token.pk}, secret='{self.token.prefix}…')"


def create_token(
    *,
    actor: Actor,
    user: User,
    name: str,
    expires_at: dt.datetime | None = None,
) -> IssuedToken:
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken(
        user=user,
        name=name,
        expires_at=expires_at,
        prefix=secret[:VISIBLE_PREFIX_LENGTH],
        lookup_hash=hash_secret(secret),
    )
    with transaction.atomic():
        token.full_clean()
        token.save()
        audit.record(
            actor=actor,
            verb=AuditEvent.Verb.CREATED,
            subject=token,
            after=audit.snapshot(token),
            note=f"API token for {user.get_username()}",
        )
    return IssuedToken(token=token, secret=secret)


def revoke_token(*, actor: Actor, token: ApiToken) -> ApiToken:
    with transaction.atomic():
        token = ApiToken.objects.select_for_update().get(pk=token.pk)
        if token.revoked_at is None:
            before = audit.snapshot(token)
            token.revoked_at = timezone.now()
            token.save(update_fields=["revoked_at", "updated_at"])
            audit.record(
                actor=actor,
                verb=AuditEvent.Verb.UPDATED,
                subject=token,
                before=before,
                after=audit.snapshot(token),
                note="API token revoked",
            )
    return token


def authenticate(secret: str) -> ApiToken | None:
    """The active token with this secret (its user loaded), or None. Revocation and expiry
    take effect at once: every call reads the token row."""
    if not secret.startswith(TOKEN_PREFIX):
        return None
    token = (
        ApiToken.objects.select_related("user")
        .filter(lookup_hash=hash_secret(secret), revoked_at__isnull=True)
        .first()
    )
    if token is None or not token.is_active or not token.user.is_active:
        return None
    now = timezone.now()
    if token.last_used_at is None or now - token.last_used_at >= LAST_USED_RESOLUTION:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
        token.last_used_at = now
    return token
