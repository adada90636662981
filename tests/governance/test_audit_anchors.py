"""The audit chain's head exported outside the database, and checked by verify_audit."""

from __future__ import annotations

import json
import logging
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from governance.models import AuditChainHead, AuditEvent
from governance.services import audit, audit_anchors, common
from tests import factories

pytestmark = pytest.mark.django_db


def write_events(count: int) -> list[AuditEvent]:
    team = factories.team()
    for index in range(count):
        team.description = f"revision {index}"
        common.save_instance(team, actor=factories.TEST_ACTOR)
    return list(AuditEvent.objects.order_by("id"))


def anchor_lines(settings: Any) -> list[dict[str, Any]]:
    text = Path(settings.GATEWAY_AUDIT_ANCHOR_FILE).read_text()
    return [json.loads(line) for line in text.splitlines()]


def rewrite_from(events: list[AuditEvent], index: int, **changes: Any) -> None:
    """What someone holding the key could do: edit an event and re-hash everything after it."""
    prev = events[index].prev_hash
    for number, event in enumerate(events[index:]):
        stored = AuditEvent.objects.get(pk=event.pk)
        if number == 0:
            for name, value in changes.items():
                setattr(stored, name, value)
        new_hash = audit.compute_hash(stored, prev)
        fields = {**(changes if number == 0 else {}), "prev_hash": prev, "hash": new_hash}
        AuditEvent.objects.filter(pk=event.pk).update(**fields)
        prev = new_hash
    AuditChainHead.objects.filter(pk=1).update(last_hash=prev)


def test_export_appends_the_head_and_logs_it(settings: Any, caplog: pytest.LogCaptureFixture):
    events = write_events(3)

    with caplog.at_level(logging.INFO, logger="gateway.audit"):
        result = audit_anchors.export_anchor()

    assert result.appended
    [line] = anchor_lines(settings)
    assert (line["event_id"], line["hash"]) == (events[-1].pk, events[-1].hash)
    assert line["at"]
    assert f"audit anchor: event {events[-1].pk} hash {events[-1].hash}" in caplog.text


def test_export_appends_only_when_the_head_moved(settings: Any) -> None:
    write_events(2)
    audit_anchors.export_anchor()
    assert not audit_anchors.export_anchor().appended

    events = write_events(1)
    assert audit_anchors.export_anchor().appended

    lines = anchor_lines(settings)
    assert len(lines) == 2
    assert lines[-1]["event_id"] == events[-1].pk
    assert lines[0]["event_id"] < lines[1]["event_id"]


def test_export_of_an_empty_chain_writes_nothing(settings: Any) -> None:
    result = audit_anchors.export_anchor()

    assert result.anchor is None and not result.appended
    assert not Path(settings.GATEWAY_AUDIT_ANCHOR_FILE).exists()


def test_verification_matches_every_anchor() -> None:
    write_events(2)
    audit_anchors.export_anchor()
    write_events(2)
    audit_anchors.export_anchor()

    report = audit.verify_chain()

    assert report.ok and report.anchors_checked == 2
    out = StringIO()
    call_command("verify_audit", stdout=out)
    assert "2 anchors matched" in out.getvalue()


def test_a_rehashed_chain_is_detected_by_its_anchor() -> None:
    """The key leaked: the rewritten chain verifies on its own, the anchor tells."""
    events = write_events(4)
    audit_anchors.export_anchor()

    rewrite_from(events, 2, note="forged")

    assert audit.verify_chain(anchors={}).ok
    report = audit.verify_chain()
    assert report.first_bad_id == events[-1].pk
    assert "anchored outside the database" in report.problem
    with pytest.raises(CommandError, match="chain rewritten"):
        call_command("verify_audit", stdout=StringIO())


def test_removing_anchored_events_and_fixing_the_head_is_detected() -> None:
    events = write_events(4)
    audit_anchors.export_anchor()

    AuditEvent.objects.filter(pk__gte=events[-2].pk).delete()
    AuditChainHead.objects.filter(pk=1).update(
        last_hash=events[-3].hash, last_event_id=events[-3].pk
    )

    assert audit.verify_chain(anchors={}).ok
    report = audit.verify_chain()
    assert report.first_bad_id == events[-1].pk
    assert "missing" in report.problem


def test_an_event_anchored_with_two_hashes_is_a_break(tmp_path: Path) -> None:
    events = write_events(2)
    path = tmp_path / "anchors.jsonl"
    lines = [
        {"event_id": events[-1].pk, "hash": events[-1].hash, "at": "2026-01-01T00:00:00+00:00"},
        {"event_id": events[-1].pk, "hash": "f" * 64, "at": "2026-01-02T00:00:00+00:00"},
    ]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))

    assert not audit.verify_chain(anchors=audit_anchors.anchored_hashes(path)).ok


def test_verify_audit_reads_another_anchor_file(tmp_path: Path) -> None:
    events = write_events(2)
    path = tmp_path / "shipped.jsonl"
    path.write_text(json.dumps({"event_id": events[0].pk, "hash": "0" * 64}) + "\n")

    with pytest.raises(CommandError, match=f"at event {events[0].pk}"):
        call_command("verify_audit", "--anchor-file", str(path), stdout=StringIO())


def test_unreadable_anchor_lines_are_skipped(settings: Any) -> None:
    events = write_events(1)
    Path(settings.GATEWAY_AUDIT_ANCHOR_FILE).write_text(
        "not json\n" + json.dumps({"event_id": events[-1].pk, "hash": events[-1].hash}) + "\n"
    )

    assert audit_anchors.anchored_hashes() == {events[-1].pk: events[-1].hash}
    assert audit.verify_chain().ok
