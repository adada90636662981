"""Providers, with credentials encrypted at rest and never echoed."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from urllib.parse import urlsplit

from django.core.exceptions import ValidationError

from governance import crypto
from governance.actors import Actor
from governance.models import Provider
from governance.services import credentials as credentials_service

MOVED_CREDENTIALS = (
    "re-enter the credentials when changing the base URL (or remove them): stored credentials "
    "are never sent to a new address their owner did not confirm"
)


def set_credentials(*, actor: Actor, provider: Provider, credentials: dict[str, str]) -> bool:
    """Store new credentials if they differ from the stored ones. Returns whether it wrote."""
    return credentials_service.store(actor=actor, instance=provider, credentials=credentials)


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
    return credentials_service.save_with_changes(
        actor=actor,
        instance=provider,
        updates=updates,
        remove=remove,
        check_move=lambda stored, entered, forgotten: check_base_url_change(
            stored,
            base_url=provider.base_url,
            entered=entered,
            forgotten=forgotten,
        ),
    )


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
    if not _same_url(stored.base_url, base_url) and credentials_service.would_follow_a_move(
        stored, entered, forgotten
    ):
        raise ValidationError({"base_url": MOVED_CREDENTIALS})


def _same_url(old: str, new: str) -> bool:
    def normal(url: str) -> tuple[str, str, str, str]:
        parts = urlsplit(url.strip())
        return (parts.scheme.lower(), parts.netloc.lower(), parts.path.rstrip("/"), parts.query)

    return normal(old) == normal(new)
