"""Virtual keys: issue, rotate, revoke. Secrets are returned once and stored only hashed."""

from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import dataclass

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from governance import policy
from governance.actors import Actor
from governance.keyhash import SECRET_PREFIX, hash_secret
from governance.models import AuditEvent, Organization, Project, Team, VirtualKey
from governance.services import audit

# SECRET_PREFIX and hash_secret live in governance.keyhash (the hot path imports them there);
# re-exported because the services are where control-plane code looks for them.
__all__ = ["SECRET_PREFIX", "IssuedKey", "create_key", "hash_secret", "revoke_key", "rotate_key"]

VISIBLE_PREFIX_LENGTH = 12
MIN_IMPORTED_SECRET_LENGTH = 24


@dataclass(frozen=True, slots=True)
class IssuedKey:
    """A key together with its secret; the only moment the secret exists in clear."""

    key: VirtualKey
    secret: str

    def __repr__(self) -> str:  # keep the secret out of tracebacks and logs
        return f"IssuedKey(key={self.key.pk}, secret='{self.key.prefix}…')"


def generate_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def visible_prefix(secret: str) -> str:
    return secret[:VISIBLE_PREFIX_LENGTH]


def _check_secret(secret: str, *, rotating: VirtualKey | None = None) -> None:
    if len(secret) < MIN_IMPORTED_SECRET_LENGTH:
        raise ValidationError(
            {"secret": f"an imported secret needs at least {MIN_IMPORTED_SECRET_LENGTH} characters"}
        )
    if secret.startswith("sk-ant-"):
        raise ValidationError(
            {"secret": "this looks like an Anthropic API key; virtual keys must be gateway secrets"}
        )
    # Another key's previous (grace) secret counts as in use too, or a lookup could match two
    # keys; a key may take back its own previous secret.
    lookup_hash = hash_secret(secret)
    grace_of_others = Q(previous_lookup_hash=lookup_hash) & ~Q(pk=getattr(rotating, "pk", None))
    if VirtualKey.objects.filter(Q(lookup_hash=lookup_hash) | grace_of_others).exists():
        raise ValidationError({"secret": "this secret is already in use by another key"})


def create_key(
    *,
    actor: Actor,
    organization: Organization,
    name: str,
    team: Team | None = None,
    project: Project | None = None,
    parent: VirtualKey | None = None,
    owner: str = "",
    expires_at: dt.datetime | None = None,
    log_content: bool = False,
    secret: str | None = None,
) -> IssuedKey:
    """Issue a key. A sub-key takes its parent's team and project and lives in its org."""
    if parent is not None:
        if parent.parent_id is not None:
            raise ValidationError({"parent": "a sub-key cannot have sub-keys of its own"})
        team, project = parent.team, parent.project
    if secret is not None:
        _check_secret(secret)
    secret = secret or generate_secret()
    key = VirtualKey(
        organization=organization,
        team=team,
        project=project,
        parent=parent,
        name=name,
        owner=owner,
        expires_at=expires_at,
        log_content=log_content,
        prefix=visible_prefix(secret),
        lookup_hash=hash_secret(secret),
    )
    _check_ownership(key)
    with transaction.atomic():
        key.full_clean()
        key.save()
        audit.record(
            actor=actor, verb=AuditEvent.Verb.KEY_CREATED, subject=key, after=audit.snapshot(key)
        )
        policy.invalidate_on_commit()
    return IssuedKey(key=key, secret=secret)


def _check_ownership(key: VirtualKey) -> None:
    org_id = key.organization_id
    if key.team is not None and key.team.organization_id != org_id:
        raise ValidationError({"team": "the team belongs to another organization"})
    if key.project is not None and key.project.organization_id != org_id:
        raise ValidationError({"project": "the project belongs to another organization"})
    if key.parent is not None and key.parent.organization_id != org_id:
        raise ValidationError({"parent": "the parent key belongs to another organization"})


def rotate_key(
    *,
    actor: Actor,
    key: VirtualKey,
    grace: dt.timedelta = dt.timedelta(0),
    secret: str | None = None,
) -> IssuedKey:
    """Give the key a new secret; the old one keeps working for `grace` (zero = stops now)."""
    if secret is not None:
        _check_secret(secret, rotating=key)
    secret = secret or generate_secret()
    with transaction.atomic():
        key = VirtualKey.objects.select_for_update().get(pk=key.pk)
        # Checked on the locked row: the caller's instance may predate a revocation.
        if key.revoked_at is not None:
            raise ValidationError("a revoked key cannot be rotated")
        before = audit.snapshot(key)
        if grace > dt.timedelta(0):
            key.previous_lookup_hash = key.lookup_hash
            key.previous_valid_until = timezone.now() + grace
        else:
            key.previous_lookup_hash = None
            key.previous_valid_until = None
        key.lookup_hash = hash_secret(secret)
        key.prefix = visible_prefix(secret)
        key.save()
        audit.record(
            actor=actor,
            verb=AuditEvent.Verb.KEY_ROTATED,
            subject=key,
            before=before,
            after=audit.snapshot(key),
            note=f"old secret valid for {int(grace.total_seconds())} s more",
        )
        policy.invalidate_on_commit()
    return IssuedKey(key=key, secret=secret)


def revoke_key(*, actor: Actor, key: VirtualKey, reason: str = "") -> VirtualKey:
    """Switch a key off now, with its sub-keys; gateways drop it once this commits."""
    with transaction.atomic():
        now = timezone.now()
        targets = list(
            VirtualKey.objects.select_for_update()
            .filter(revoked_at__isnull=True)
            .filter(pk__in=[key.pk, *key.sub_keys.values_list("pk", flat=True)])
        )
        for target in targets:
            before = audit.snapshot(target)
            target.revoked_at = now
            target.save(update_fields=["revoked_at", "updated_at"])
            audit.record(
                actor=actor,
                verb=AuditEvent.Verb.KEY_REVOKED,
                subject=target,
                before=before,
                after=audit.snapshot(target),
                note=reason,
            )
        # Evicting before commit could let a gateway re-cache the still-active row.
        policy.invalidate_on_commit()
    key.refresh_from_db()
    return key
