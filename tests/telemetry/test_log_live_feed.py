"""/logs/live when ledger rows become visible out of id order.

Ids are handed out at insert and become visible at commit; with several gateway processes
writing batches, a lower id can commit after a higher one was already shown. The feed's cursor
(`since` plus `gaps`) must still return such a row, and exactly once.
"""

from __future__ import annotations

import datetime as dt
import re
import threading
from typing import Any

import pytest
from django.db import connections, transaction
from django.utils import timezone

from telemetry import ledger
from telemetry.dashboards import logfilters
from telemetry.dashboards.logfilters import LiveCursor
from telemetry.models import UsageRecord
from tests import factories
from tests.telemetry.usage_events import event, is_postgres

LIVE = "/logs/live"


def _row(pk: int, *, seconds_ago: float = 1, **fields: Any) -> UsageRecord:
    """A ledger row with a chosen id, as if its transaction had just committed."""
    created_at = timezone.now() - dt.timedelta(seconds=seconds_ago)
    return UsageRecord.objects.create(pk=pk, **event(created_at, request_id=f"req-{pk}", **fields))


def _ids(data: dict[str, Any]) -> list[int]:
    return [int(pk) for pk in re.findall(r'<tr data-id="(\d+)"', data["html"])]


def _poll(client: Any, cursor: dict[str, Any], **filters: Any) -> dict[str, Any]:
    data: dict[str, Any] = client.get(
        LIVE, {"since": cursor["since"], "gaps": cursor["gaps"], **filters}
    ).json()
    return data


@pytest.mark.django_db
def test_a_row_committed_after_a_higher_id_is_returned_exactly_once(admin_client):
    # The page was read when id 9 was the newest and nothing below it was missing.
    cursor: dict[str, Any] = {"since": 9, "gaps": ""}
    _row(10, seconds_ago=3)
    _row(12, seconds_ago=1)  # id 11 is still in another writer's open transaction

    first = _poll(admin_client, cursor)
    assert _ids(first) == [12, 10]
    assert (first["since"], first["gaps"]) == (12, "11")

    _row(11, seconds_ago=2)  # the late commit
    second = _poll(admin_client, first)
    assert _ids(second) == [11]
    assert second["count"] == 1
    assert (second["since"], second["gaps"]) == (12, "")

    third = _poll(admin_client, second)
    assert third["count"] == 0


@pytest.mark.django_db
def test_a_row_still_uncommitted_when_the_page_was_read_appears_in_the_feed(admin_client):
    for pk in (1, 2, 4):
        _row(pk)
    page = admin_client.get("/logs")
    assert (page.context["since"], page.context["gaps"]) == (4, "3")
    assert 'data-gaps="3"' in page.content.decode()

    _row(3)
    data = _poll(admin_client, {"since": 4, "gaps": "3"})
    assert _ids(data) == [3]
    assert data["gaps"] == ""


@pytest.mark.django_db
def test_a_gap_filled_by_a_row_outside_the_filters_is_dropped(admin_client):
    org = factories.organization(name="acme")
    ml = factories.team(organization=org, name="ml")
    web = factories.team(organization=org, name="web")
    ml_key = factories.virtual_key(team=ml, name="ml-ci")
    web_key = factories.virtual_key(team=web, name="web-dev")
    _row(1, key=ml_key)
    _row(3, key=ml_key)
    first = _poll(admin_client, {"since": 0, "gaps": ""}, team=ml.pk)
    assert (_ids(first), first["gaps"]) == ([3, 1], "2")

    _row(2, key=web_key)
    second = _poll(admin_client, first, team=ml.pk)
    assert (second["count"], second["gaps"]) == (0, "")


@pytest.mark.django_db
def test_ids_that_never_get_a_row_are_given_up_once_far_below_the_newest(admin_client, monkeypatch):
    # A rolled-back batch or a request id already in the ledger uses up ids for good.
    monkeypatch.setattr(logfilters, "GAP_WINDOW", 3)
    _row(1)
    _row(3)
    first = _poll(admin_client, {"since": 0, "gaps": ""})
    assert first["gaps"] == "2"
    _row(4)
    second = _poll(admin_client, first)
    assert second["gaps"] == "2"  # within 3 ids of the newest: could still commit
    _row(5)
    assert _poll(admin_client, second)["gaps"] == ""


def test_a_malformed_cursor_is_ignored_piece_by_piece():
    assert LiveCursor.parse("12", "11,x,-3,0,13,,7,\u00b2," + "9" * 5000) == LiveCursor(12, (7, 11))
    assert LiveCursor.parse("nonsense", "3") == LiveCursor(0)
    assert LiveCursor.parse(None, None) == LiveCursor(0)
    many = ",".join(str(pk) for pk in range(1, 1000))
    assert len(LiveCursor.parse("5000", many).gaps) == logfilters.MAX_GAPS


@pytest.mark.django_db(transaction=True)
def test_a_real_late_commit_on_postgresql_is_returned_exactly_once(admin_client):
    """Two writers as in production: one holds its batch open while a later one commits."""
    if not is_postgres():
        pytest.skip("SQLite serializes writers; a late commit needs PostgreSQL")
    inserted, release = threading.Event(), threading.Event()
    now = timezone.now()

    def slow_writer() -> None:
        try:
            with transaction.atomic():
                ledger.write_events([event(now, request_id="req-slow")])
                inserted.set()
                release.wait(timeout=10)
        finally:
            connections.close_all()

    start = admin_client.get(LIVE, {"since": 0}).json()
    thread = threading.Thread(target=slow_writer)
    thread.start()
    try:
        assert inserted.wait(timeout=10)
        ledger.write_events([event(now, request_id="req-fast")])
        first = _poll(admin_client, start)
        assert "req-fast" in first["html"] and "req-slow" not in first["html"]
        assert first["gaps"] != ""
    finally:
        release.set()
        thread.join(timeout=10)
    second = _poll(admin_client, first)
    assert second["count"] == 1 and "req-slow" in second["html"]
    assert _poll(admin_client, second)["count"] == 0
