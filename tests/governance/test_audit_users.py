"""User and group changes are audited, without password hashes, with the admin as actor."""

from __future__ import annotations

from io import StringIO
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.core.management import call_command
from django.urls import reverse

from governance.actors import Actor
from governance.models import AuditEvent
from governance.services import audit, users

pytestmark = pytest.mark.django_db
User = get_user_model()
PASSWORD = "correct-horse-battery-staple-42"


def events_for(obj: Any) -> list[AuditEvent]:
    return list(
        AuditEvent.objects.filter(subject_type=obj._meta.label, subject_id=str(obj.pk)).order_by(
            "id"
        )
    )


def all_event_text() -> str:
    return " ".join(
        str([e.before, e.after, e.note, e.subject_repr]) for e in AuditEvent.objects.all()
    )


def test_createsuperuser_is_audited_as_system_without_the_hash(monkeypatch):
    monkeypatch.setenv("DJANGO_SUPERUSER_PASSWORD", PASSWORD)
    call_command(
        "createsuperuser",
        "--noinput",
        "--username=root",
        "--email=root@example.com",
        stdout=StringIO(),
    )
    user = User.objects.get(username="root")

    [event] = events_for(user)

    assert (event.verb, event.actor, event.actor_user_id) == ("created", "system", None)
    assert event.after is not None
    assert event.after["password"] == "set"
    assert event.after["is_superuser"] is True and event.after["username"] == "root"
    assert "last_login" not in event.after
    assert user.password not in all_event_text()
    assert audit.verify_chain().ok


def test_a_password_change_records_changed_never_the_hash():
    user = User.objects.create_user("dev", password=PASSWORD)
    old_hash = user.password

    user.set_password(PASSWORD + "-new")
    user.save()

    event = events_for(user)[-1]
    assert event.verb == "updated"
    assert event.before is not None and event.after is not None
    assert (event.before["password"], event.after["password"]) == ("set", "changed")
    text = all_event_text()
    assert old_hash not in text and user.password not in text


def test_a_login_is_not_audited(client):
    user = User.objects.create_user("dev", password=PASSWORD)
    count = AuditEvent.objects.count()

    assert client.login(username="dev", password=PASSWORD)

    user.refresh_from_db()
    assert user.last_login is not None
    assert AuditEvent.objects.count() == count


def test_an_unchanged_save_is_not_audited():
    user = User.objects.create_user("dev", password=PASSWORD)
    count = AuditEvent.objects.count()

    User.objects.get(pk=user.pk).save()

    assert AuditEvent.objects.count() == count


def test_field_changes_record_before_and_after():
    user = User.objects.create_user("dev", email="old@example.com")

    user.email = "new@example.com"
    user.is_staff = True
    user.save()

    event = events_for(user)[-1]
    assert event.before is not None and event.after is not None
    assert (event.before["email"], event.after["email"]) == ("old@example.com", "new@example.com")
    assert (event.before["is_staff"], event.after["is_staff"]) == (False, True)


def test_group_membership_changes_are_audited_from_either_side():
    user = User.objects.create_user("dev")
    finance, platform = Group.objects.create(name="finance"), Group.objects.create(name="platform")

    user.groups.add(finance)
    platform.user_set.add(user)
    user.groups.remove(finance)

    user_events = [e for e in events_for(user) if e.after and "groups" in e.after]
    assert [(e.before, e.after) for e in user_events] == [
        ({"groups": []}, {"groups": ["finance"]}),
        ({"groups": ["finance", "platform"]}, {"groups": ["platform"]}),
    ]
    [group_event] = [e for e in events_for(platform) if e.after and "members" in e.after]
    assert (group_event.before, group_event.after) == ({"members": []}, {"members": ["dev"]})


def test_permission_changes_are_audited():
    user = User.objects.create_user("dev")
    group = Group.objects.create(name="finance")
    permission = Permission.objects.get(codename="view_budget")

    group.permissions.add(permission)
    user.user_permissions.add(permission)
    user.user_permissions.clear()

    group_event = events_for(group)[-1]
    assert group_event.after == {"permissions": ["governance.view_budget"]}
    user_events = [e.after for e in events_for(user) if e.after and "user_permissions" in e.after]
    assert user_events == [
        {"user_permissions": ["governance.view_budget"]},
        {"user_permissions": []},
    ]


def test_group_create_rename_and_delete_are_audited():
    group = Group.objects.create(name="finance")
    group.permissions.add(Permission.objects.get(codename="view_budget"))
    User.objects.create_user("dev").groups.add(group)
    pk = group.pk

    group.name = "finance-team"
    group.save()
    group.delete()

    events = list(
        AuditEvent.objects.filter(subject_type="auth.Group", subject_id=str(pk)).order_by("id")
    )
    verbs = [e.verb for e in events if e.verb != "updated" or "name" in (e.after or {})]
    assert verbs == ["created", "updated", "deleted"]
    deleted = events[-1]
    assert deleted.before is not None
    assert deleted.before["name"] == "finance-team"
    assert deleted.before["permissions"] == ["governance.view_budget"]
    assert deleted.before["members"] == ["dev"]


def test_a_user_delete_is_audited_with_their_groups():
    user = User.objects.create_user("leaver", password=PASSWORD)
    user.groups.add(Group.objects.create(name="finance"))
    pk, password_hash = user.pk, user.password

    user.delete()

    [deleted] = AuditEvent.objects.filter(
        subject_type=User._meta.label, subject_id=str(pk), verb="deleted"
    )
    assert deleted.before is not None
    assert deleted.before["username"] == "leaver"
    assert deleted.before["groups"] == ["finance"]
    assert deleted.before["password"] == "set"
    assert password_hash not in all_event_text()


def test_changes_inside_acting_as_name_that_actor():
    admin = User.objects.create_user("boss")

    with users.acting_as(Actor.of_user(admin)):
        user = User.objects.create_user("dev")

    event = events_for(user)[-1]
    assert (event.actor, event.actor_user_id) == ("user:boss", admin.pk)
    assert users.current_actor() == Actor.system()


# --- through the admin ------------------------------------------------------------------------


def test_admin_user_creation_and_group_change_are_audited_as_the_admin(admin_client, admin_user):
    group = Group.objects.create(name="finance")
    response = admin_client.post(
        reverse("admin:auth_user_add"),
        {
            "username": "newdev",
            "password1": PASSWORD,
            "password2": PASSWORD,
            "usable_password": "true",
            "_save": "Save",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    user = User.objects.get(username="newdev")
    created = events_for(user)[0]
    assert (created.verb, created.actor, created.actor_user_id) == (
        "created",
        f"user:{admin_user.username}",
        admin_user.pk,
    )
    assert created.after is not None and created.after["password"] == "set"

    response = admin_client.post(
        reverse("admin:auth_user_change", args=[user.pk]),
        {
            "username": "newdev",
            "is_active": "on",
            "is_staff": "on",
            "groups": [group.pk],
            "date_joined_0": "2026-01-01",
            "date_joined_1": "00:00:00",
            "_save": "Save",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    later = events_for(user)[1:]
    assert {e.actor for e in later} == {f"user:{admin_user.username}"}
    assert any(e.after == {"groups": ["finance"]} for e in later)
    assert any((e.after or {}).get("is_staff") is True for e in later)
    assert user.password not in all_event_text()


def test_admin_password_change_is_audited_as_the_admin(admin_client, admin_user):
    user = User.objects.create_user("dev", password=PASSWORD)

    response = admin_client.post(
        reverse("admin:auth_user_password_change", args=[user.pk]),
        {"password1": PASSWORD + "-2", "password2": PASSWORD + "-2", "usable_password": "true"},
    )

    assert response.status_code == 302, response.content.decode()[:2000]
    event = events_for(user)[-1]
    assert event.actor == f"user:{admin_user.username}"
    assert event.after is not None and event.after["password"] == "changed"


def test_admin_group_delete_is_audited_as_the_admin(admin_client, admin_user):
    group = Group.objects.create(name="finance")
    pk = group.pk

    response = admin_client.post(reverse("admin:auth_group_delete", args=[pk]), {"post": "yes"})

    assert response.status_code == 302
    [event] = AuditEvent.objects.filter(
        subject_type="auth.Group", subject_id=str(pk), verb="deleted"
    )
    assert event.actor == f"user:{admin_user.username}"
    assert audit.verify_chain().ok
