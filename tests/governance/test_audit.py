from __future__ import annotations

import itertools
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection

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
