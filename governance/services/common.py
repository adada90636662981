"""Generic audited create / update / delete used by the entity services, admin and config."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar

from django.db import models, router, transaction
from django.db.models.deletion import Collector

from governance import policy
from governance.actors import Actor
from governance.models import AuditEvent
from governance.services import audit

M = TypeVar("M", bound=models.Model)
# Rows of one fast-deleted queryset per DELETE statement (well under SQLite's variable limit).
FAST_DELETE_BATCH = 500


def save_instance(instance: M, *, actor: Actor, note: str = "", verb: str = "") -> bool:
    """Validate and save `instance` if it differs from the stored row. Returns whether it wrote.

    The stored row is locked and compared field by field, so saving an unchanged object writes
    nothing and records nothing: this is what makes `apply_config` idempotent.
    """
    with transaction.atomic():
        before = None
        if instance.pk is not None:
            # No ordering: a default ordering across a nullable foreign key makes an outer
            # join, which PostgreSQL refuses to lock FOR UPDATE.
            stored = type(instance)._default_manager.select_for_update().filter(pk=instance.pk)
            current = stored.order_by().first()
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


@dataclass(frozen=True, slots=True)
class _Removed:
    """A row about to be deleted, described while it still exists."""

    subject_type: str
    subject_id: str
    subject_repr: str
    before: dict[str, Any]


def _describe(row: models.Model) -> _Removed:
    return _Removed(row._meta.label, str(row.pk), str(row), audit.snapshot(row))


def _pk(row: models.Model) -> Any:
    return row.pk


def _collect(instance: models.Model) -> tuple[Collector, list[_Removed]]:
    """Everything deleting `instance` removes, the instance first, as Model.delete() finds it.

    Querysets Django would delete in one statement without loading them ("fast deletes") are
    loaded here, and replaced by deletes of exactly the rows loaded: a row that appeared since
    is then not deleted unseen (its foreign key makes the delete fail instead).
    """
    using = router.db_for_write(type(instance), instance=instance)
    collector = Collector(using=using, origin=instance)
    collector.collect([instance])
    removed = [_describe(instance)]
    for rows in collector.data.values():
        removed += [_describe(row) for row in sorted(rows, key=_pk) if row != instance]
    pinned: list[models.QuerySet[Any]] = []
    for queryset in collector.fast_deletes:
        loaded = list(queryset.order_by("pk"))
        removed += [_describe(row) for row in loaded]
        manager = queryset.model._base_manager.using(using)
        pks = [row.pk for row in loaded]
        for start in range(0, len(pks), FAST_DELETE_BATCH):
            pinned.append(manager.filter(pk__in=pks[start : start + FAST_DELETE_BATCH]))
    collector.fast_deletes = pinned
    return collector, removed


def delete_instance(instance: models.Model, *, actor: Actor, note: str = "") -> None:
    """Delete `instance` and whatever its foreign keys cascade to, with one DELETED event for
    every row removed (the instance's first), in one transaction.

    The delete runs through Django's deletion Collector, as Model.delete() does (signals
    included); a model that overrides delete() would be bypassed, and none does.
    """
    if instance.pk is None:
        raise ValueError(f"{instance._meta.object_name} has no primary key: nothing to delete")
    with transaction.atomic():
        # Locking the row first keeps other transactions from attaching new children to it
        # while the delete is collected (their foreign-key check waits on this lock).
        locked = type(instance)._default_manager.select_for_update().filter(pk=instance.pk)
        list(locked.values_list("pk", flat=True))
        collector, removed = _collect(instance)
        collector.delete()
        origin = removed[0]
        cascade_note = f"cascade: deleted with {origin.subject_type} {origin.subject_id}"
        for index, row in enumerate(removed):
            # The rows are gone, so each subject is named explicitly rather than passed as a model.
            audit.record(
                actor=actor,
                verb=AuditEvent.Verb.DELETED,
                subject_type=row.subject_type,
                subject_id=row.subject_id,
                subject_repr=row.subject_repr,
                before=row.before,
                note=note if index == 0 else "; ".join(filter(None, (note, cascade_note))),
            )
        policy.invalidate_on_commit()
