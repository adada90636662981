"""The ledger writer: idempotent batches, defaults for missing fields, no leftovers between
batches (PostgreSQL stages each batch in a temp table)."""

from __future__ import annotations

import pytest
from django.db import transaction

from telemetry import ledger
from telemetry.models import UsageRecord
from tests.telemetry.usage_events import at, event

pytestmark = pytest.mark.django_db


def test_a_batch_written_twice_leaves_one_row_per_request() -> None:
    batch = [event(at("2026-11-02 10:00")), event(at("2026-11-02 10:05"))]

    assert ledger.write_events(batch) == 2
    assert ledger.write_events(batch) == 2

    assert UsageRecord.objects.count() == 2


def test_fields_missing_from_an_event_take_the_column_defaults() -> None:
    ledger.write_events(
        [{"request_id": "gwreq_minimal", "created_at": at("2026-11-02 10:00"), "status": 502}]
    )

    row = UsageRecord.objects.get(request_id="gwreq_minimal")
    assert (row.cost_micros, row.error_type, row.team_id, row.ttfb_ms, row.attempts) == (
        0,
        "",
        None,
        None,
        1,
    )
    assert row.created_at == at("2026-11-02 10:00")


def test_an_unknown_field_in_an_event_is_not_written() -> None:
    ledger.write_events([{**event(at("2026-11-02 10:00")), "traceparent": "00-abc"}])

    assert UsageRecord.objects.count() == 1


def test_a_second_batch_in_the_same_transaction_does_not_rewrite_the_first() -> None:
    first = event(at("2026-11-02 10:00"))
    with transaction.atomic():
        ledger.write_events([first])
        UsageRecord.objects.filter(request_id=first["request_id"]).delete()
        ledger.write_events([event(at("2026-11-02 10:01"))])

    assert not UsageRecord.objects.filter(request_id=first["request_id"]).exists()
    assert UsageRecord.objects.count() == 1
