from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import models


class AuditEvent(models.Model):
    """An append-only record of a governance change, chained to the previous one by hash.

    `hash` covers the previous event's hash and this event's content (keyed with
    GATEWAY_AUDIT_KEY since version 2), so editing or deleting any row breaks the chain
    (`manage.py verify_audit`; governance/services/audit.py).
    """

    class Verb(models.TextChoices):
        CREATED = "created"
        UPDATED = "updated"
        DELETED = "deleted"
        KEY_CREATED = "key_created"
        KEY_ROTATED = "key_rotated"
        KEY_REVOKED = "key_revoked"
        CONFIG_APPLIED = "config_applied"
        PRICES_LOADED = "prices_loaded"

    created_at = models.DateTimeField(db_index=True)
    actor = models.CharField(max_length=200, help_text="Who: a username, 'config', 'system'.")
    # No constraint and no cascade: the id is part of the hashed content, so deleting the user
    # must leave the column as it was (SET_NULL would rewrite, and so break, the chain).
    actor_user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        null=True,
        blank=True,
        related_name="+",
    )
    verb = models.CharField(max_length=30, choices=Verb.choices)
    subject_type = models.CharField(max_length=100)
    subject_id = models.CharField(max_length=64, blank=True)
    subject_repr = models.CharField(max_length=300, blank=True)
    before = models.JSONField(null=True, blank=True)
    after = models.JSONField(null=True, blank=True)
    note = models.TextField(blank=True)
    prev_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64, unique=True)
    # 1: SHA-256 over the content without actor_user_id (events written before the keyed
    # chain); 2: HMAC-SHA256 with GATEWAY_AUDIT_KEY over every column.
    hash_version = models.PositiveSmallIntegerField(default=1)

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["subject_type", "subject_id"], name="audit_subject_idx")]

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M:%S} {self.actor} {self.verb} {self.subject_repr}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if self.pk is not None:
            raise PermissionError("Audit events are append-only.")
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> tuple[int, dict[str, int]]:
        raise PermissionError("Audit events are append-only.")


class AuditChainHead(models.Model):
    """One row holding the newest hash; locking it serializes appends to the chain."""

    last_hash = models.CharField(max_length=64)
    last_event_id = models.BigIntegerField(null=True)

    def __str__(self) -> str:
        return f"audit chain head at event {self.last_event_id}"


class PolicyChange(models.Model):
    """Outbox of policy-version bumps: written in the governance transaction, published to the
    shared version (Redis or the version file) after commit, and retried until published, so a
    revocation committed while Redis is down still reaches every gateway."""

    created_at = models.DateTimeField(auto_now_add=True)
    published_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)

    class Meta:
        indexes = [
            models.Index(
                fields=["id"],
                name="policy_change_unpublished",
                condition=models.Q(published_at__isnull=True),
            )
        ]

    def __str__(self) -> str:
        state = "published" if self.published_at else "pending"
        return f"policy change {self.pk} ({state})"
