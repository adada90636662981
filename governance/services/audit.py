"""Append-only, hash-chained audit events.

Each event's `hash` covers the previous event's hash and the event's own content, so editing,
inserting or removing a row breaks the chain (`manage.py verify_audit`). Two versions coexist:

- 1 (events written before the keyed chain): SHA-256 over the previous hash and the content
  without `actor_user_id` or the version. Still verified as written, never written again.
- 2: HMAC-SHA256, keyed with GATEWAY_AUDIT_KEY (kept outside the database), over every column.
  Without the key, a database administrator cannot re-hash an edited chain.

A chain that leaked its key can still be rewritten consistently; the anchors exported outside the
database (governance/services/audit_anchors.py) then no longer match it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal
from functools import cache
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import models, transaction
from django.utils import timezone

from governance.actors import Actor
from governance.models import AuditChainHead, AuditEvent
from governance.services import audit_anchors

GENESIS_HASH = "0" * 64
LEGACY_VERSION = 1
KEYED_VERSION = 2
MIN_KEY_LENGTH = 32
# Fields that must never be copied into the audit trail.
SECRET_FIELDS = frozenset(
    {"lookup_hash", "previous_lookup_hash", "credentials_encrypted", "secret_target"}
)
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
        data[field.attname] = json_value(value)
    return data


def json_value(value: Any) -> Any:
    if isinstance(value, dt.datetime) and value.tzinfo is not None:
        # In UTC, as the database returns it, so an equal moment never reads as a change.
        return value.astimezone(dt.UTC).isoformat()
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    return value


# --- hashing -------------------------------------------------------------------------------


@cache
def _key(configured: str, secret_key: str) -> bytes:
    if configured:
        if len(configured) < MIN_KEY_LENGTH:
            raise ImproperlyConfigured(
                f"GATEWAY_AUDIT_KEY must be at least {MIN_KEY_LENGTH} characters: python -c "
                '"import secrets; print(secrets.token_urlsafe(32))"'
            )
        return configured.encode()
    # Derived the way governance/crypto.py derives the Fernet key, with a label of its own so
    # the two keys differ.
    return hashlib.sha256(b"gateway-audit:" + secret_key.encode()).digest()


def audit_key() -> bytes:
    """The chain's HMAC key: GATEWAY_AUDIT_KEY, else one derived from SECRET_KEY."""
    return _key(settings.GATEWAY_AUDIT_KEY, settings.SECRET_KEY)


def _dumps(body: Mapping[str, Any]) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _legacy_canonical(event: AuditEvent) -> bytes:
    # Exactly the version 1 form: changing anything here breaks every event written with it.
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
    return _dumps(body)


def _keyed_canonical(event: AuditEvent, prev_hash: str) -> bytes:
    """Every column but `id` (the order is what prev_hash pins) and `hash` itself."""
    body = {
        "created_at": json_value(event.created_at),
        "actor": event.actor,
        "actor_user_id": event.actor_user_id,
        "verb": event.verb,
        "subject_type": event.subject_type,
        "subject_id": event.subject_id,
        "subject_repr": event.subject_repr,
        "before": event.before,
        "after": event.after,
        "note": event.note,
        "prev_hash": prev_hash,
        "hash_version": event.hash_version,
    }
    return _dumps(body)


def compute_hash(event: AuditEvent, prev_hash: str) -> str:
    """The hash `event` must carry when it follows `prev_hash`, by its hash_version."""
    if event.hash_version == LEGACY_VERSION:
        return hashlib.sha256(prev_hash.encode() + b"\n" + _legacy_canonical(event)).hexdigest()
    if event.hash_version == KEYED_VERSION:
        content = _keyed_canonical(event, prev_hash)
        return hmac.new(audit_key(), content, hashlib.sha256).hexdigest()
    raise ValueError(f"unknown audit hash version {event.hash_version}")


# --- writing -------------------------------------------------------------------------------


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
        hash_version=KEYED_VERSION,
    )
    event.hash = compute_hash(event, head.last_hash)
    event.save()
    head.last_hash = event.hash
    head.last_event_id = event.pk
    head.save(update_fields=["last_hash", "last_event_id"])
    return event


# --- verifying -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ChainReport:
    checked: int
    first_bad_id: int | None
    problem: str
    anchors_checked: int = 0

    @property
    def ok(self) -> bool:
        return self.first_bad_id is None and not self.problem


def _event_problem(event: AuditEvent, prev: str, keyed_seen: bool) -> str:
    if event.prev_hash != prev:
        return "previous hash does not match: a row was removed"
    if event.hash_version not in (LEGACY_VERSION, KEYED_VERSION):
        return f"unknown hash version {event.hash_version}: row was edited"
    if keyed_seen and event.hash_version == LEGACY_VERSION:
        # Unkeyed hashes are only ever older than keyed ones; a later one was forged without
        # the key.
        return "unkeyed hash after keyed events: the chain was rewritten"
    if not hmac.compare_digest(compute_hash(event, prev), event.hash):
        return "content does not match its hash: row was edited"
    return ""


def _events() -> Iterator[AuditEvent]:
    return AuditEvent.objects.order_by("id").iterator(chunk_size=2000)


def verify_chain(*, anchors: Mapping[int, str] | None = None) -> ChainReport:
    """Recompute every hash in order; report the first event that does not match.

    `anchors` ({event id: hash}, by default read from GATEWAY_AUDIT_ANCHOR_FILE) must all still
    be in the chain: a chain re-hashed from some point on, even with the right key, differs
    from what was exported before.
    """
    pending = dict(audit_anchors.anchored_hashes() if anchors is None else anchors)
    total_anchors = len(pending)
    prev, checked, last_id, keyed_seen = GENESIS_HASH, 0, None, False
    for event in _events():
        problem = _event_problem(event, prev, keyed_seen)
        anchored = pending.pop(event.pk, None)
        if not problem and anchored is not None and anchored != event.hash:
            problem = "hash differs from the one anchored outside the database: chain rewritten"
        if problem:
            return ChainReport(checked, event.pk, problem, total_anchors - len(pending))
        prev, last_id = event.hash, event.pk
        keyed_seen = keyed_seen or event.hash_version == KEYED_VERSION
        checked += 1
    if pending:
        missing = min(pending)
        problem = "an event anchored outside the database is missing: rows were removed"
        return ChainReport(checked, missing, problem, total_anchors - len(pending))
    head = AuditChainHead.objects.filter(pk=1).first()
    if head is not None and (head.last_hash != prev or head.last_event_id != last_id):
        problem = "the newest events were removed (chain head mismatch)"
        return ChainReport(checked, None, problem, total_anchors)
    return ChainReport(checked, None, "", total_anchors)
