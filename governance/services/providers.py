"""Providers, with credentials encrypted at rest and never echoed."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from django.db import transaction

from governance import crypto, policy
from governance.actors import Actor
from governance.models import AuditEvent, Provider
from governance.services import audit, common


def set_credentials(*, actor: Actor, provider: Provider, credentials: dict[str, str]) -> bool:
    """Store new credentials if they differ from the stored ones. Returns whether it wrote.

    The audit trail names the credential fields that were set, never their values.
    """
    cleaned = {name: value for name, value in credentials.items() if value}
    if cleaned == crypto.decrypt_credentials(provider.credentials_encrypted):
        return False
    note = f"credentials set: {', '.join(sorted(cleaned)) or 'none'}"
    with transaction.atomic():
        provider.credentials_encrypted = crypto.encrypt_credentials(cleaned)
        if common.save_instance(provider, actor=actor, note=note):
            return True
        # Snapshots show credentials only as "set", so a replaced secret looks unchanged to
        # save_instance: write and audit it here.
        provider.save(update_fields=["credentials_encrypted", "updated_at"])
        audit.record(actor=actor, verb=AuditEvent.Verb.UPDATED, subject=provider, note=note)
        policy.invalidate_on_commit()
    return True


def credential_fields(provider: Provider) -> list[str]:
    """Names of the stored credential fields (never their values), for display."""
    return sorted(crypto.decrypt_credentials(provider.credentials_encrypted))


def update_credentials(
    *,
    actor: Actor,
    provider: Provider,
    updates: Mapping[str, str],
    remove: Iterable[str] = (),
) -> bool:
    """Change some credential fields and keep the rest (blank updates keep the stored value).

    This is what write-only admin fields need: the admin never sees the stored values, so it
    can only say which fields to replace or forget. Returns whether anything was written.
    """
    merged = crypto.decrypt_credentials(provider.credentials_encrypted)
    for name in remove:
        merged.pop(name, None)
    merged.update({name: value for name, value in updates.items() if value})
    return set_credentials(actor=actor, provider=provider, credentials=merged)
