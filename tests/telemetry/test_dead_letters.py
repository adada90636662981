"""Dead letters: a usage event the ledger refuses is kept on disk, shown in the admin and the
metrics, and written by a retry once its cause is gone (issue 10, item 2)."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse
from prometheus_client import generate_latest

from proxy.usage import UsageBuffer
from telemetry import dead_letters, exposition, ledger, spool
from telemetry.models import UsageRecord

pytestmark = pytest.mark.django_db(transaction=True)  # the writer thread has its own connection

CREATED = dt.datetime(2026, 11, 26, 12, 30, tzinfo=dt.UTC)
POISON_STATUS = 599
PAGE = "admin:telemetry_dead_letters"


def event(number: int, **fields: Any) -> dict[str, Any]:
    return {
        "request_id": "gwreq_" + uuid.uuid4().hex,
        "created_at": CREATED + dt.timedelta(seconds=number),
        "organization_id": 7,
        "requested_model": "claude-sonnet-4-6",
        "status": 200,
        "cost_micros": 100,
        **fields,
    }


@pytest.fixture
def spool_dir(settings: Any, tmp_path: Path) -> Path:
    settings.GATEWAY_SPOOL_DIR = str(tmp_path / "spool")
    return tmp_path / "spool"


@pytest.fixture
def poisoned_row_builder(monkeypatch: pytest.MonkeyPatch) -> Callable[[], None]:
    """A row builder that lets one row through with a value the database refuses (a negative
    status breaks the column's CHECK). Returns the function that removes the cause."""
    real = ledger._row
    status = list(ledger.clean_event({})).index("status")

    def poisoned(event: Mapping[str, Any], adapt: Callable[[Any], Any]) -> tuple[Any, ...]:
        row = real(event, adapt)
        if event.get("status") != POISON_STATUS:
            return row
        return (*row[:status], -1, *row[status + 1 :])

    monkeypatch.setattr(ledger, "_row", poisoned)
    return lambda: monkeypatch.setattr(ledger, "_row", real)


def run_gateway_writer(spool_dir: Path, events: list[dict[str, Any]]) -> UsageBuffer:
    async def run() -> UsageBuffer:
        buffer = UsageBuffer(
            ledger.write_events_reusing_connection,
            spool_dir,
            replay_interval=float("inf"),
            release=ledger.close_connection,
        )
        for item in events:
            buffer.put(item)
        await buffer.close()
        return buffer

    return asyncio.run(run())


def gauges() -> dict[str, float]:
    text = generate_latest(exposition.scrape_registry()).decode()
    wanted = ("gateway_usage_spooled_events", "gateway_usage_dead_letter_events")
    return {
        name: float(value)
        for name, _, value in (line.partition(" ") for line in text.splitlines())
        if name in wanted
    }


def test_a_refused_row_is_shown_and_written_by_a_retry_once_its_cause_is_gone(
    admin_client: Client, spool_dir: Path, poisoned_row_builder: Callable[[], None]
) -> None:
    events = [event(n) for n in range(10)]
    bad = events[4] = event(4, status=POISON_STATUS)

    buffer = run_gateway_writer(spool_dir, events)

    assert (buffer.written, buffer.dead_lettered, buffer.spooled) == (9, 1, 0)
    assert UsageRecord.objects.count() == 9
    page = admin_client.get(reverse(PAGE)).content.decode()
    assert bad["request_id"] in page
    assert "IntegrityError" in page
    assert "1 usage event in 1 file was refused by the ledger" in page
    index = admin_client.get(reverse("admin:index")).content.decode()
    assert 'id="usage-backlog-warning"' in index
    assert gauges() == {
        "gateway_usage_spooled_events": 0.0,
        "gateway_usage_dead_letter_events": 1.0,
    }

    still = admin_client.post(reverse(PAGE), {"action": "retry", "all": "1"}, follow=True)
    assert "Still refused: 1" in still.content.decode()
    assert spool.backlog(spool_dir).dead == 1

    poisoned_row_builder()  # the cause is gone
    done = admin_client.post(reverse(PAGE), {"action": "retry", "all": "1"}, follow=True)

    assert "Written to the ledger: 1. Still refused: 0." in done.content.decode()
    assert UsageRecord.objects.get(request_id=bad["request_id"]).status == POISON_STATUS
    assert UsageRecord.objects.count() == 10
    assert spool.backlog(spool_dir) == spool.Backlog()
    assert gauges()["gateway_usage_dead_letter_events"] == 0.0
    index = admin_client.get(reverse("admin:index")).content.decode()
    assert 'id="usage-backlog-warning"' not in index


def test_a_retry_of_chosen_dead_letters_leaves_the_others(spool_dir: Path) -> None:
    first, second = event(1, created_at=None), event(2, created_at=None)
    spool.write_dead_letters(
        spool_dir,
        [spool.dead_letter_line(error="IntegrityError", event=e) for e in (first, second)],
    )
    chosen = {e.id for e in dead_letters.list_dead_letters(spool_dir).entries[:1]}
    second["created_at"] = CREATED  # the retry of the first one fails again, the second waits

    outcome = dead_letters.retry(spool_dir, chosen, write=ledger.write_events_isolating)

    assert (outcome.written, outcome.failed) == (0, 1)
    listing = dead_letters.list_dead_letters(spool_dir)
    assert listing.total == 2
    assert [e.request_id for e in listing.entries] == [first["request_id"], second["request_id"]]
    assert "IntegrityError" in listing.entries[0].error


def test_discarding_a_dead_letter_keeps_it_aside_and_clears_the_backlog(
    admin_client: Client, spool_dir: Path
) -> None:
    bad = event(1, created_at=None)
    spool.write_dead_letters(spool_dir, [spool.dead_letter_line(error="refused", event=bad)])
    (entry,) = dead_letters.list_dead_letters(spool_dir).entries

    admin_client.post(reverse(PAGE), {"action": "discard", "selected": [entry.id]})

    assert spool.backlog(spool_dir) == spool.Backlog()
    (kept,) = (spool_dir / "dead" / "discarded").iterdir()
    assert bad["request_id"] in kept.read_text()


def test_the_dead_letter_page_needs_the_ledger_permission(
    client: Client, django_user_model: Any, spool_dir: Path
) -> None:
    staff = django_user_model.objects.create_user("viewer", password="pw", is_staff=True)
    client.force_login(staff)

    assert client.get(reverse(PAGE)).status_code == 403
    assert client.post(reverse(PAGE), {"action": "retry", "all": "1"}).status_code == 403
