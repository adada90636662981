"""Providers, with credentials encrypted at rest and never echoed."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from urllib.parse import urlsplit

from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.db import transaction

from governance import crypto, policy
from governance.actors import Actor
from governance.models import AuditEvent, Provider
from governance.services import audit, common

MOVED_CREDENTIALS = (
    "re-enter the credentials when changing the base URL (or remove them): stored credentials "
    "are never sent to a new address their owner did not confirm"
)


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


def save_provider(
    *,
    actor: Actor,
    provider: Provider,
    updates: Mapping[str, str] | None = None,
    remove: Iterable[str] = (),
) -> bool:
    """Save a provider's settings together with changes to some credential fields: blank
    updates keep the stored value, `remove` forgets fields. Returns whether it wrote.

    This is what write-only admin fields need: the admin never sees the stored values, so it
    can only say which fields to replace or forget. A new base URL is refused while a stored
    credential would follow it without being re-entered (check_base_url_change).
    """
    entered = {name: value for name, value in (updates or {}).items() if value}
    remove = list(remove)
    with transaction.atomic():
        stored = Provider.objects.select_for_update().filter(pk=provider.pk).first()
        if stored is not None:
            check_base_url_change(
                stored, base_url=provider.base_url, entered=entered, forgotten=remove
            )
        merged = crypto.decrypt_credentials(stored.credentials_encrypted if stored else "")
        for name in remove:
            merged.pop(name, None)
        merged.update(entered)
        # set_credentials saves the other fields too when it writes; when the credentials are
        # unchanged it writes nothing, and the plain save records the rest.
        if set_credentials(actor=actor, provider=provider, credentials=merged):
            return True
        return common.save_instance(provider, actor=actor)


def check_base_url_change(
    stored: Provider,
    *,
    base_url: str,
    entered: Iterable[str] = (),
    forgotten: Iterable[str] = (),
) -> None:
    """Refuse to move `stored` (the provider as it is in the database) to `base_url` while a
    stored credential would be sent there unconfirmed.

    Credentials belong to the host their owner gave them for: whoever may edit the base URL
    could otherwise point it at a host of their own and collect the key with the next
    request. `entered` and `forgotten` name the credential fields the same change re-enters
    or removes; each other stored field would follow the URL.
    """
    if _same_url(stored.base_url, base_url) or not stored.credentials_encrypted:
        return
    try:
        names = set(crypto.decrypt_credentials(stored.credentials_encrypted))
    except ImproperlyConfigured:  # unreadable, but still something that would be sent along
        names = {"(undecryptable)"}
    if names - set(entered) - set(forgotten):
        raise ValidationError({"base_url": MOVED_CREDENTIALS})


def _same_url(old: str, new: str) -> bool:
    def normal(url: str) -> tuple[str, str, str, str]:
        parts = urlsplit(url.strip())
        return (parts.scheme.lower(), parts.netloc.lower(), parts.path.rstrip("/"), parts.query)

    return normal(old) == normal(new)
