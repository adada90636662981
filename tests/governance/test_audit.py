from __future__ import annotations

import datetime as dt
import itertools
from io import StringIO
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection

from governance.actors import Actor
from governance.models import AuditChainHead, AuditEvent, Organization, Team
from governance.services import audit, common
from tests import factories


def write_events(count: int) -> list[AuditEvent]:
    """`count` audited changes: a team created, then renamed over and over."""
    team = factories.team()
    for index in range(count - 1):
        team.description = f"revision {index}"
        common.save_instance(team, actor=factories.TEST_ACTOR)
    return list(AuditEvent.objects.order_by("-id")[:count])[::-1]


def verify_command() -> str:
    out = StringIO()
    call_command("verify_audit", stdout=out)
    return out.getvalue()


@pytest.mark.django_db
def test_chain_verifies_after_many_writes() -> None:
    write_events(150)

    report = audit.verify_chain()

    assert report.ok
    assert report.checked == AuditEvent.objects.count() >= 150
    assert "Audit chain intact" in verify_command()


@pytest.mark.django_db
def test_each_event_links_to_the_previous_hash() -> None:
    events = write_events(5)

    for previous, event in itertools.pairwise(events):
        assert event.prev_hash == previous.hash
    head = AuditChainHead.objects.get(pk=1)
    assert (head.last_hash, head.last_event_id) == (events[-1].hash, events[-1].pk)


@pytest.mark.django_db
def test_editing_an_event_with_queryset_update_is_detected() -> None:
    events = write_events(10)
    edited = events[4]

    AuditEvent.objects.filter(pk=edited.pk).update(actor="someone-else")

    report = audit.verify_chain()
    assert not report.ok
    assert report.first_bad_id == edited.pk
    assert "edited" in report.problem
    with pytest.raises(CommandError, match=f"at event {edited.pk}"):
        verify_command()


@pytest.mark.django_db
def test_editing_before_after_content_is_detected() -> None:
    events = write_events(3)

    AuditEvent.objects.filter(pk=events[1].pk).update(after={"description": "forged"})

    assert audit.verify_chain().first_bad_id == events[1].pk


@pytest.mark.django_db
def test_rewriting_an_events_hash_is_detected_at_the_next_event() -> None:
    events = write_events(4)
    forged = events[1]
    forged.note = "forged"
    new_hash = audit.compute_hash(forged, forged.prev_hash)

    AuditEvent.objects.filter(pk=forged.pk).update(note="forged", hash=new_hash)

    report = audit.verify_chain()
    assert report.first_bad_id == events[2].pk
    assert "removed" in report.problem


@pytest.mark.django_db
def test_deleting_an_event_with_queryset_delete_is_detected() -> None:
    events = write_events(10)

    AuditEvent.objects.filter(pk=events[5].pk).delete()

    report = audit.verify_chain()
    assert report.first_bad_id == events[6].pk
    with pytest.raises(CommandError, match="a row was removed"):
        verify_command()


@pytest.mark.django_db
def test_deleting_an_event_with_raw_sql_is_detected() -> None:
    events = write_events(10)

    with connection.cursor() as cursor:
        table = connection.ops.quote_name(AuditEvent._meta.db_table)
        cursor.execute(f"DELETE FROM {table} WHERE id = %s", [events[2].pk])  # noqa: S608

    assert audit.verify_chain().first_bad_id == events[3].pk
    with pytest.raises(CommandError, match="Audit chain broken"):
        verify_command()


@pytest.mark.django_db
def test_deleting_the_newest_events_is_detected() -> None:
    events = write_events(10)

    AuditEvent.objects.filter(pk__gte=events[7].pk).delete()

    report = audit.verify_chain()
    assert not report.ok
    assert "chain head mismatch" in report.problem
    with pytest.raises(CommandError, match="newest events were removed"):
        verify_command()


@pytest.mark.django_db
def test_saving_an_existing_event_is_refused() -> None:
    event = write_events(1)[0]
    event.note = "changed"

    with pytest.raises(PermissionError, match="append-only"):
        event.save()

    assert AuditEvent.objects.get(pk=event.pk).note == ""


@pytest.mark.django_db
def test_deleting_an_event_through_the_model_is_refused() -> None:
    event = write_events(1)[0]

    with pytest.raises(PermissionError, match="append-only"):
        event.delete()

    assert AuditEvent.objects.filter(pk=event.pk).exists()


@pytest.mark.django_db
def test_unchanged_save_writes_no_event() -> None:
    team = factories.team(description="steady")
    count = AuditEvent.objects.count()
    updated_at = Team.objects.get(pk=team.pk).updated_at

    wrote = common.save_instance(Team.objects.get(pk=team.pk), actor=factories.TEST_ACTOR)

    assert not wrote
    assert AuditEvent.objects.count() == count
    assert Team.objects.get(pk=team.pk).updated_at == updated_at


@pytest.mark.django_db
def test_update_records_before_and_after() -> None:
    team = factories.team(description="old")
    team.description = "new"

    assert common.save_instance(team, actor=factories.TEST_ACTOR, note="why")

    event = AuditEvent.objects.order_by("-id").first()
    assert event is not None
    assert (event.verb, event.note, event.actor) == ("updated", "why", "tests")
    assert event.before is not None and event.after is not None
    assert (event.before["description"], event.after["description"]) == ("old", "new")
    assert (event.subject_type, event.subject_id) == ("governance.Team", str(team.pk))


@pytest.mark.django_db
def test_delete_is_audited_with_the_removed_row() -> None:
    org = factories.organization(display_name="Gone Inc")
    pk = org.pk

    common.delete_instance(org, actor=factories.TEST_ACTOR, note="cleanup")

    event = AuditEvent.objects.order_by("-id").first()
    assert event is not None
    assert event.verb == AuditEvent.Verb.DELETED
    assert (event.subject_type, event.subject_id) == ("governance.Organization", str(pk))
    assert event.before is not None
    assert event.before["display_name"] == "Gone Inc"
    assert not Organization.objects.filter(pk=pk).exists()
    assert audit.verify_chain().ok


@pytest.mark.django_db
def test_invalid_instance_is_not_saved_or_audited() -> None:
    count = AuditEvent.objects.count()

    with pytest.raises(Exception, match="time zone"):
        factories.organization(timezone="Mars/Olympus")

    assert AuditEvent.objects.count() == count


def test_record_outside_a_transaction_is_refused() -> None:
    # No database access is allowed here, so nothing can be in an atomic block; the check must
    # fire before the first query.
    with pytest.raises(RuntimeError, match="inside the writing transaction"):
        audit.record(actor=factories.TEST_ACTOR, verb="updated", subject_type="x")


@pytest.mark.django_db
def test_snapshot_hides_secret_fields() -> None:
    key = factories.virtual_key()

    data = audit.snapshot(key)

    assert data["lookup_hash"] == "set"
    assert data["previous_lookup_hash"] == ""
    assert key.lookup_hash not in str(data)
    assert "created_at" not in data and "updated_at" not in data


# --- the keyed chain (version 2) over every column ------------------------------------------

LEGACY_EVENT: dict[str, Any] = {
    "created_at": dt.datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=dt.UTC),
    "actor": "user:legacy",
    "verb": "updated",
    "subject_type": "governance.Team",
    "subject_id": "7",
    "subject_repr": "acme/backend",
    "before": {"description": "old"},
    "after": {"description": "new"},
    "note": "why",
}
# What the version 1 code (SHA-256, before the keyed chain) computed for LEGACY_EVENT after
# the genesis hash: events stored with it must verify forever.
LEGACY_HASH = "e7504266f70daa8505e9a8216355468b0656c06a65ffb687dc76d98d67aaa540"


def write_legacy_events(count: int) -> list[AuditEvent]:
    """`count` version 1 events, as the gateway wrote them before the keyed chain."""
    prev = audit.GENESIS_HASH
    events = []
    for index in range(count):
        event = AuditEvent(
            **{**LEGACY_EVENT, "note": f"legacy {index}"}, prev_hash=prev, hash_version=1
        )
        event.hash = audit.compute_hash(event, prev)
        event.save()
        events.append(event)
        prev = event.hash
    AuditChainHead.objects.update_or_create(
        pk=1, defaults={"last_hash": prev, "last_event_id": events[-1].pk}
    )
    return events


def test_version_1_hash_is_computed_as_before() -> None:
    event = AuditEvent(**LEGACY_EVENT, prev_hash=audit.GENESIS_HASH, hash_version=1)

    assert audit.compute_hash(event, audit.GENESIS_HASH) == LEGACY_HASH


@pytest.mark.django_db
def test_new_events_are_keyed_hmac_version_2() -> None:
    event = write_events(1)[0]

    assert event.hash_version == 2
    assert event.hash != audit.compute_hash(
        AuditEvent(**{**model_fields(event), "hash_version": 1}), event.prev_hash
    )


def model_fields(event: AuditEvent) -> dict[str, Any]:
    names = [f.attname for f in AuditEvent._meta.concrete_fields if f.name not in ("id", "hash")]
    return {name: getattr(event, name) for name in names}


EDITS: dict[str, Any] = {
    "created_at": dt.datetime(2020, 1, 1, tzinfo=dt.UTC),
    "actor": "user:someone-else",
    "actor_user_id": 424242,
    "verb": "deleted",
    "subject_type": "governance.Organization",
    "subject_id": "999",
    "subject_repr": "forged",
    "before": {"forged": True},
    "after": {"forged": True},
    "note": "forged",
    "hash_version": 1,
}


@pytest.mark.django_db
@pytest.mark.parametrize("column", sorted(EDITS))
def test_editing_any_column_of_a_keyed_event_is_detected(column: str) -> None:
    events = write_events(4)
    edited = events[2]

    AuditEvent.objects.filter(pk=edited.pk).update(**{column: EDITS[column]})

    report = audit.verify_chain()
    assert not report.ok
    assert report.first_bad_id == edited.pk


@pytest.mark.django_db
def test_editing_the_actor_user_of_an_event_is_detected() -> None:
    user = get_user_model().objects.create(username="auditor")
    team = factories.team()
    team.description = "changed by a person"
    common.save_instance(team, actor=Actor.of_user(user))
    event = AuditEvent.objects.order_by("-id").first()
    assert event is not None and event.actor_user_id == user.pk

    AuditEvent.objects.filter(pk=event.pk).update(actor_user_id=None)

    assert audit.verify_chain().first_bad_id == event.pk


@pytest.mark.django_db
def test_legacy_events_verify_and_chain_into_keyed_events() -> None:
    legacy = write_legacy_events(3)
    write_events(3)

    report = audit.verify_chain()

    chain = list(AuditEvent.objects.order_by("id"))
    assert report.ok and report.checked == len(chain) > 3
    assert [e.hash_version for e in chain] == [1, 1, 1] + [2] * (len(chain) - 3)
    assert chain[3].prev_hash == legacy[-1].hash


@pytest.mark.django_db
def test_editing_a_legacy_event_in_a_mixed_chain_is_detected() -> None:
    legacy = write_legacy_events(3)
    write_events(2)

    AuditEvent.objects.filter(pk=legacy[1].pk).update(actor="user:someone-else")

    assert audit.verify_chain().first_bad_id == legacy[1].pk


@pytest.mark.django_db
def test_rehashing_an_edit_without_the_key_is_detected() -> None:
    """Whoever can write the database but lacks the key can only produce unkeyed hashes."""
    events = write_events(5)
    prev = events[1].hash
    for event in events[2:]:
        forged = AuditEvent(**{**model_fields(event), "hash_version": 1, "prev_hash": prev})
        if event is events[2]:
            forged.note = "forged"
        forged.hash = audit.compute_hash(forged, prev)
        AuditEvent.objects.filter(pk=event.pk).update(
            note=forged.note, hash_version=1, prev_hash=prev, hash=forged.hash
        )
        prev = forged.hash
    AuditChainHead.objects.filter(pk=1).update(last_hash=prev)

    report = audit.verify_chain()
    assert report.first_bad_id == events[2].pk
    assert "rewritten" in report.problem


@pytest.mark.django_db
def test_a_chain_checked_with_another_key_fails(settings: Any) -> None:
    write_events(2)
    assert audit.verify_chain().ok

    settings.GATEWAY_AUDIT_KEY = "another-key-" + "x" * 40

    assert not audit.verify_chain().ok


@pytest.mark.django_db
def test_a_configured_key_is_used_instead_of_the_derived_one(settings: Any) -> None:
    settings.GATEWAY_AUDIT_KEY = "k" * 32
    write_events(2)
    assert audit.verify_chain().ok

    settings.GATEWAY_AUDIT_KEY = ""

    assert not audit.verify_chain().ok


def test_a_short_audit_key_is_refused(settings: Any) -> None:
    settings.GATEWAY_AUDIT_KEY = "too-short"

    with pytest.raises(ImproperlyConfigured, match="at least 32 characters"):
        audit.audit_key()


@pytest.mark.django_db
def test_deleting_a_user_keeps_the_events_they_wrote_verifiable() -> None:
    user = get_user_model().objects.create(username="leaver")
    team = factories.team()
    team.description = "their change"
    common.save_instance(team, actor=Actor.of_user(user))
    event = AuditEvent.objects.order_by("-id").first()
    assert event is not None

    user.delete()

    assert AuditEvent.objects.get(pk=event.pk).actor_user_id == event.actor_user_id
    assert audit.verify_chain().ok
