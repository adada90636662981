"""Credentials encrypted at rest, for every model that holds them (providers, MCP servers).

Write-only everywhere: the audit trail names the credentials that were set, never their values,
and the admin never shows the stored ones, so it can only say which to replace or forget.
Credentials belong to the destination their owner gave them for: whoever may edit the URL (or
a stdio server's command) could otherwise point it at something of their own and collect the
secrets with the next request, so a move is refused while a stored credential would follow it
without being re-entered or removed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TypeVar

from django.core.exceptions import ImproperlyConfigured
from django.db import transaction

from governance import crypto, policy
from governance.actors import Actor
from governance.models import AuditEvent, MCPServer, Provider
from governance.services import audit, common

Credentialed = Provider | MCPServer
Instance = TypeVar("Instance", Provider, MCPServer)


def store(*, actor: Actor, instance: Credentialed, credentials: Mapping[str, str]) -> bool:
    """Store `credentials` if they differ from the stored ones; the instance's other fields are
    saved with them when it writes. Returns whether it wrote."""
    cleaned = {name: value for name, value in credentials.items() if value}
    if cleaned == crypto.decrypt_credentials(instance.credentials_encrypted):
        return False
    note = f"credentials set: {', '.join(sorted(cleaned)) or 'none'}"
    with transaction.atomic():
        instance.credentials_encrypted = crypto.encrypt_credentials(cleaned)
        if common.save_instance(instance, actor=actor, note=note):
            return True
        # Snapshots show credentials only as "set", so a replaced secret looks unchanged to
        # save_instance: write and audit it here.
        instance.save(update_fields=["credentials_encrypted", "updated_at"])
        audit.record(actor=actor, verb=AuditEvent.Verb.UPDATED, subject=instance, note=note)
        policy.invalidate_on_commit()
    return True


def save_with_changes(
    *,
    actor: Actor,
    instance: Instance,
    updates: Mapping[str, str] | None,
    remove: Iterable[str],
    check_move: Callable[[Instance, set[str], list[str]], None],
) -> bool:
    """Save the instance's settings together with changes to some credentials: blank updates
    keep the stored value, `remove` forgets names. Returns whether it wrote.

    `check_move(stored row, names re-entered, names removed)` raises ValidationError when the
    change moves the instance somewhere its stored credentials would follow unconfirmed."""
    entered = {name: value for name, value in (updates or {}).items() if value}
    forgotten = list(remove)
    with transaction.atomic():
        stored = type(instance)._default_manager.select_for_update().filter(pk=instance.pk).first()
        if stored is not None:
            check_move(stored, set(entered), forgotten)
        merged = crypto.decrypt_credentials(stored.credentials_encrypted if stored else "")
        for name in forgotten:
            merged.pop(name, None)
        merged.update(entered)
        # store() saves the other fields too when it writes; when the credentials are
        # unchanged it writes nothing, and the plain save records the rest.
        if store(actor=actor, instance=instance, credentials=merged):
            return True
        return common.save_instance(instance, actor=actor)


def would_follow_a_move(
    stored: Credentialed, entered: Iterable[str], forgotten: Iterable[str]
) -> bool:
    """Whether a stored credential is neither re-entered nor removed by the same change."""
    if not stored.credentials_encrypted:
        return False
    try:
        names = set(crypto.decrypt_credentials(stored.credentials_encrypted))
    except ImproperlyConfigured:  # unreadable, but still something that would be sent along
        names = {"(undecryptable)"}
    return bool(names - set(entered) - set(forgotten))
