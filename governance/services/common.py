"""Generic audited create / update / delete used by the entity services, admin and config."""

from __future__ import annotations

from typing import TypeVar

from django.db import models, transaction

from governance import policy
from governance.actors import Actor
from governance.models import AuditEvent
from governance.services import audit

M = TypeVar("M", bound=models.Model)


def save_instance(instance: M, *, actor: Actor, note: str = "", verb: str = "") -> bool:
    """Validate and save `instance` if it differs from the stored row. Returns whether it wrote.

    The stored row is locked and compared field by field, so saving an unchanged object writes
    nothing and records nothing: this is what makes `apply_config` idempotent.
    """
    with transaction.atomic():
        before = None
        if instance.pk is not None:
            stored = type(instance)._default_manager.select_for_update().filter(pk=instance.pk)
            current = stored.first()
            before = audit.snapshot(current) if current is not None else None
        instance.full_clean()
        if before is not None and before == audit.snapshot(instance):
            return False
        instance.save()
        audit.record(
            actor=actor,
            verb=verb or (AuditEvent.Verb.UPDATED if before else AuditEvent.Verb.CREATED),
            subject=instance,
            before=before,
            after=audit.snapshot(instance),
            note=note,
        )
        policy.invalidate_on_commit()
    return True


def delete_instance(instance: models.Model, *, actor: Actor, note: str = "") -> None:
    with transaction.atomic():
        before = audit.snapshot(instance)
        subject_type, subject_id, subject_repr = instance._meta.label, instance.pk, str(instance)
        instance.delete()
        # The row is gone, so the subject is named explicitly rather than passed as a model.
        audit.record(
            actor=actor,
            verb=AuditEvent.Verb.DELETED,
            subject_type=subject_type,
            subject_id=str(subject_id),
            subject_repr=subject_repr,
            before=before,
            note=note,
        )
        policy.invalidate_on_commit()
