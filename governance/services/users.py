"""Audited changes to django.contrib.auth users and groups.

Users and groups are written by Django itself (its admin, `createsuperuser`, `changepassword`,
logins), not by governance services, so their changes are recorded from model signals: create,
update and delete of User and Group, and changes of group membership and permissions (m2m).
The password hash is never recorded, only "set", "unusable" or "changed"; a save that only
moves `last_login` records nothing.

The actor is whoever `acting_as()` names for the current request (governance's User and Group
admins do), else "system" (createsuperuser, a shell). Inside a transaction (the admin's, a
service's) the event is written in it; a save outside one (createsuperuser) has committed by
the time the signal runs, and its event follows in a transaction of its own.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import UNUSABLE_PASSWORD_PREFIX
from django.contrib.auth.models import Group, Permission
from django.db import models, transaction
from django.db.models.signals import m2m_changed, post_delete, post_save, pre_delete, pre_save

from governance.actors import Actor
from governance.models import AuditEvent
from governance.services import audit

_acting: ContextVar[Actor | None] = ContextVar("governance_acting", default=None)
# Where the state before a change waits for the signal that follows it.
_BEFORE_SAVE = "_audit_before_save"
_BEFORE_DELETE = "_audit_before_delete"
_BEFORE_M2M = "_audit_before_m2m"
DISPATCH_UID = "governance.services.users"


@contextlib.contextmanager
def acting_as(actor: Actor) -> Iterator[None]:
    """Attribute the user and group changes made inside this block to `actor`."""
    token = _acting.set(actor)
    try:
        yield
    finally:
        _acting.reset(token)


def current_actor() -> Actor:
    return _acting.get() or Actor.system()


# --- snapshots -----------------------------------------------------------------------------


def password_state(encoded: str | None) -> str:
    if not encoded:
        return ""
    return "unusable" if encoded.startswith(UNUSABLE_PASSWORD_PREFIX) else "set"


def snapshot(instance: models.Model) -> dict[str, Any]:
    """The audited picture of a user or group: no password hash, no last_login."""
    data = audit.snapshot(instance)
    data.pop("last_login", None)
    if "password" in data:
        data["password"] = password_state(data["password"])
    return data


def _label(obj: models.Model) -> str:
    if isinstance(obj, Permission):
        return f"{obj.content_type.app_label}.{obj.codename}"
    if isinstance(obj, Group):
        return obj.name
    return str(obj.get_username()) if hasattr(obj, "get_username") else str(obj)


def _labels(queryset: models.QuerySet[Any]) -> list[str]:
    if queryset.model is Permission:
        queryset = queryset.select_related("content_type")
    return sorted(_label(obj) for obj in queryset)


def _relations() -> dict[type[models.Model], tuple[str, str]]:
    """Tracked m2m through models: (field name on the owning model, name from the other side)."""
    user_model = get_user_model()
    return {
        user_model.groups.through: ("groups", "members"),
        user_model.user_permissions.through: ("user_permissions", "users"),
        Group.permissions.through: ("permissions", "groups"),
    }


def _related(
    instance: models.Model, other: type[models.Model], field: str, reverse: bool
) -> list[str]:
    """What `instance` is linked to through `field`; `reverse`: instance is on the far side
    (a group's members, say) and `other` is the model that owns the field."""
    if not reverse:
        return _labels(getattr(instance, field).all())
    return _labels(other._default_manager.filter(**{field: instance}))


def memberships(instance: models.Model) -> dict[str, list[str]]:
    """A user's groups and permissions, or a group's permissions and members."""
    user_model = get_user_model()
    if isinstance(instance, user_model):
        return {
            "groups": _labels(instance.groups.all()),
            "user_permissions": _labels(instance.user_permissions.all()),
        }
    if isinstance(instance, Group):
        return {
            "permissions": _labels(instance.permissions.all()),
            "members": _labels(user_model._default_manager.filter(groups=instance)),
        }
    return {}


# --- signal handlers -----------------------------------------------------------------------


def _only_last_login(update_fields: Any) -> bool:
    return update_fields is not None and set(update_fields) <= {"last_login"}


def _record(
    instance: models.Model,
    verb: str,
    *,
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
    note: str = "",
) -> None:
    # A savepoint when the change runs in a transaction; a transaction of its own otherwise.
    with transaction.atomic():
        audit.record(
            actor=current_actor(),
            verb=verb,
            subject_type=instance._meta.label,
            subject_id=str(instance.pk),
            subject_repr=str(instance),
            before=before,
            after=after,
            note=note,
        )


def before_save(
    sender: type[models.Model], instance: models.Model, raw: bool, update_fields: Any, **_: Any
) -> None:
    if raw or _only_last_login(update_fields) or instance.pk is None:
        return
    stored = sender._default_manager.filter(pk=instance.pk).first()
    if stored is not None:
        password = getattr(stored, "password", None)
        instance.__dict__[_BEFORE_SAVE] = (snapshot(stored), password)


def after_save(
    sender: type[models.Model],
    instance: models.Model,
    created: bool,
    raw: bool,
    update_fields: Any,
    **_: Any,
) -> None:
    if raw or _only_last_login(update_fields):
        return
    before, old_password = instance.__dict__.pop(_BEFORE_SAVE, (None, None))
    after = snapshot(instance)
    new_password = getattr(instance, "password", None)
    if before is not None and old_password != new_password and after.get("password") == "set":
        after["password"] = "changed"  # noqa: S105 (a state, never the hash)
    if before is not None and before == after:
        return
    verb = AuditEvent.Verb.CREATED if created or before is None else AuditEvent.Verb.UPDATED
    _record(instance, verb, before=before, after=after)


def before_delete(sender: type[models.Model], instance: models.Model, **_: Any) -> None:
    # Memberships go with the row (their link rows are deleted without signals): keep them.
    instance.__dict__[_BEFORE_DELETE] = {**snapshot(instance), **memberships(instance)}


def after_delete(sender: type[models.Model], instance: models.Model, **_: Any) -> None:
    before = instance.__dict__.pop(_BEFORE_DELETE, None) or snapshot(instance)
    _record(instance, AuditEvent.Verb.DELETED, before=before, after=None)


def m2m_change(
    sender: type[models.Model],
    instance: models.Model,
    action: str,
    reverse: bool,
    model: type[models.Model],
    **_: Any,
) -> None:
    """Group membership and permissions: before and after as sorted lists of names."""
    names = _relations().get(sender)
    if names is None or action not in _M2M_ACTIONS:
        return
    field = names[0]
    key = names[1] if reverse else field
    stash = instance.__dict__.setdefault(_BEFORE_M2M, {})
    if action.startswith("pre_"):
        stash[sender] = _related(instance, model, field, reverse)
        return
    before = stash.pop(sender, None)
    after = _related(instance, model, field, reverse)
    if before is None or before == after:
        return
    _record(instance, AuditEvent.Verb.UPDATED, before={key: before}, after={key: after})


_M2M_ACTIONS = frozenset(
    {"pre_add", "post_add", "pre_remove", "post_remove", "pre_clear", "post_clear"}
)


def connect() -> None:
    """Connect the handlers (GovernanceConfig.ready); connecting twice is harmless."""
    for model in (get_user_model(), Group):
        uid = f"{DISPATCH_UID}.{model._meta.label}"
        pre_save.connect(before_save, sender=model, dispatch_uid=uid)
        post_save.connect(after_save, sender=model, dispatch_uid=uid)
        pre_delete.connect(before_delete, sender=model, dispatch_uid=uid)
        post_delete.connect(after_delete, sender=model, dispatch_uid=uid)
    for through in _relations():
        m2m_changed.connect(m2m_change, sender=through, dispatch_uid=f"{DISPATCH_UID}.m2m")
