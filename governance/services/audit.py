"""Append-only, hash-chained audit events."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.db import models, transaction
from django.utils import timezone

from governance.actors import Actor
from governance.models import AuditChainHead, AuditEvent

GENESIS_HASH = "0" * 64
# Fields that must never be copied into the audit trail.
SECRET_FIELDS = frozenset({"lookup_hash", "previous_lookup_hash", "credentials_encrypted"})
UNTRACKED_FIELDS = frozenset({"created_at", "updated_at"})


def snapshot(instance: models.Model) -> dict[str, Any]:
    """A JSON-safe picture of a row for before/after, with secrets reduced to 'set'/''."""
    data: dict[str, Any] = {}
    for field in instance._meta.concrete_fields:
        if field.name in UNTRACKED_FIELDS:
            continue
        value = getattr(instance, field.attname)
        if field.name in SECRET_FIELDS:
            data[field.name] = "set" if value else ""
            continue
        data[field.attname] = _json_value(value)
    return data


def _json_value(value: Any) -> Any:
    if isinstance(value, dt.datetime) and value.tzinfo is not None:
        # In UTC, as the database returns it, so an equal moment never reads as a change.
        return value.astimezone(dt.UTC).isoformat()
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    return value


def _canonical(event: AuditEvent) -> bytes:
    body = {
        "created_at": event.created_at.isoformat(),
        "actor": event.actor,
        "verb": event.verb,
        "subject_type": event.subject_type,
        "subject_id": event.subject_id,
        "subject_repr": event.subject_repr,
        "before": event.before,
        "after": event.after,
        "note": event.note,
    }
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def compute_hash(event: AuditEvent, prev_hash: str) -> str:
    return hashlib.sha256(prev_hash.encode() + b"\n" + _canonical(event)).hexdigest()


def record(
    *,
    actor: Actor,
    verb: str,
    subject: models.Model | None = None,
    subject_type: str = "",
    subject_id: str = "",
    subject_repr: str = "",
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    note: str = "",
) -> AuditEvent:
    """Append one event to the chain. Must run inside the caller's transaction."""
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("audit.record must run inside the writing transaction")
    head = AuditChainHead.objects.select_for_update().filter(pk=1).first()
    if head is None:
        head = AuditChainHead.objects.create(pk=1, last_hash=GENESIS_HASH)
    now = timezone.now()
    event = AuditEvent(
        # Truncated to milliseconds so every database stores and returns the same value.
        created_at=now.replace(microsecond=now.microsecond // 1000 * 1000),
        actor=actor.label,
        actor_user_id=actor.user_id,
        verb=verb,
        subject_type=subject._meta.label if subject is not None else subject_type,
        subject_id=str(subject.pk) if subject is not None else subject_id,
        subject_repr=(str(subject) if subject is not None else subject_repr)[:300],
        before=before,
        after=after,
        note=note,
        prev_hash=head.last_hash,
    )
    event.hash = compute_hash(event, head.last_hash)
    event.save()
    head.last_hash = event.hash
    head.last_event_id = event.pk
    head.save(update_fields=["last_hash", "last_event_id"])
    return event


@dataclass(frozen=True, slots=True)
class ChainReport:
    checked: int
    first_bad_id: int | None
    problem: str

    @property
    def ok(self) -> bool:
        return self.first_bad_id is None and not self.problem


def verify_chain() -> ChainReport:
    """Recompute every hash in order; report the first event that does not match."""
    prev = GENESIS_HASH
    checked = 0
    last_id: int | None = None
    for event in AuditEvent.objects.order_by("id").iterator(chunk_size=2000):
        if event.prev_hash != prev:
            return ChainReport(checked, event.pk, "previous hash does not match: a row was removed")
        if compute_hash(event, prev) != event.hash:
            return ChainReport(checked, event.pk, "content does not match its hash: row was edited")
        prev = event.hash
        last_id = event.pk
        checked += 1
    head = AuditChainHead.objects.filter(pk=1).first()
    if head is not None and (head.last_hash != prev or head.last_event_id != last_id):
        return ChainReport(checked, None, "the newest events were removed (chain head mismatch)")
    return ChainReport(checked, None, "")
