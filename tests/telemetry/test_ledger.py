"""The ledger writer: idempotent batches, defaults for missing fields, no leftovers between
batches (PostgreSQL stages each batch in a temp table)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from django.db import OperationalError, ProgrammingError, transaction
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

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


# --- a bad row costs only itself (issue 10, item 2) ------------------------------------------


def dirty(created_at: dt.datetime) -> dict[str, Any]:
    """An event with every kind of value a client or upstream can smuggle in."""
    return event(
        created_at,
        requested_model="claude\x00-sonnet\x1b[31m" + "€" * 300,  # NUL, ESC, multi-byte
        routed_model="x" * 1_000,
        key_name="line\nbreak\ttab\x00",
        error_message="e" * 5_000,
        session_id="\ud800lone surrogate",
        client_name=12345,
        status="200",
        input_tokens=2**70,
        latency_ms=-5,
        stream="false",
    )


def test_a_batch_with_nul_characters_and_over_long_strings_lands_whole_and_cleaned() -> None:
    batch = [event(at("2026-11-02 10:00")) for _ in range(199)]
    batch.insert(100, dirty(at("2026-11-02 10:01")))

    result = ledger.write_events_reusing_connection(batch)

    assert (result.written, result.rejected) == (200, [])
    assert UsageRecord.objects.count() == 200
    row = UsageRecord.objects.get(request_id=batch[100]["request_id"])
    assert row.requested_model == "claude-sonnet[31m" + "€" * 183  # 200 characters
    assert len(row.requested_model) == 200
    assert row.routed_model == "x" * 200
    assert row.key_name == "line break tab"
    assert row.error_message == "e" * 300
    assert row.session_id == "lone surrogate"
    assert row.client_name == "12345"
    assert (row.status, row.input_tokens, row.latency_ms, row.stream) == (200, 2**63 - 1, 0, False)


def test_cleaning_coerces_each_value_to_its_column() -> None:
    cleaned = ledger.clean_event(
        {
            "created_at": "2026-11-02T10:00:00",  # naive: the gateway writes UTC
            "status": 70_000,
            "attempts": "3",
            "ttfb_ms": None,
            "cost_micros": 12.9,
            "organization_id": "not a number",
            "cost_estimated": "yes",
            "client_disconnected": 0,
        }
    )

    assert cleaned["created_at"] == at("2026-11-02 10:00")
    assert (cleaned["status"], cleaned["attempts"], cleaned["cost_micros"]) == (32_767, 3, 12)
    assert (cleaned["ttfb_ms"], cleaned["organization_id"]) == (None, None)
    assert (cleaned["cost_estimated"], cleaned["client_disconnected"]) == (True, False)
    assert (cleaned["route"], cleaned["request_id"], cleaned["error_type"]) == (
        "anthropic.messages",
        "",
        "",
    )


ANY_VALUE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.decimals(allow_nan=True, allow_infinity=True),
    st.text(max_size=300),  # control characters, surrogates and over-long values among them
    st.binary(max_size=40),
    st.datetimes(timezones=st.one_of(st.none(), st.timezones())),
    st.sampled_from(["", "200", "3.7", "yes", "off", "2026-11-02T10:00:00"]),
)


def _typed(row: tuple[Any, ...]) -> list[tuple[type, Any]]:
    return [(type(value), value) for value in row]  # True == 1, but not as a column value


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(sorted(ledger.LEDGER_FIELDS)), ANY_VALUE))
def test_the_generated_row_builder_cleans_exactly_like_the_column_cleaners(
    values: dict[str, Any],
) -> None:
    def adapt(value: Any) -> Any:
        return value

    assert _typed(ledger._row(values, adapt)) == _typed(ledger._row_by_cleaners(values, adapt))


def test_the_generated_row_builder_keeps_a_well_formed_event_as_it_is() -> None:
    well_formed = event(at("2026-11-02 10:00"), project_id=None, ttfb_ms=7, error_message="é" * 50)
    columns = list(ledger.clean_event({}))  # the column order
    row = dict(zip(columns, ledger._row(well_formed, lambda value: value), strict=True))

    assert {name: row[name] for name in well_formed if name in row} == {
        name: value for name, value in well_formed.items() if name in ledger.LEDGER_FIELDS
    }


def test_a_row_the_database_still_refuses_is_rejected_alone_and_the_rest_written() -> None:
    batch = [event(at("2026-11-02 10:00")) for _ in range(40)]
    bad = batch[17]
    del bad["created_at"]  # no time to invent: the column is NOT NULL

    result = ledger.write_events_isolating(batch)

    assert result.written == 39
    (rejected,) = result.rejected
    assert rejected.event is bad
    assert "IntegrityError" in rejected.error
    assert UsageRecord.objects.count() == 39
    assert not UsageRecord.objects.filter(request_id=bad["request_id"]).exists()


def test_a_connection_error_is_raised_for_the_caller_to_spool(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def down(rows: Any) -> None:
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(ledger, "_insert", down)

    with pytest.raises(OperationalError):
        ledger.write_events_isolating([event(at("2026-11-02 10:00"))])


def test_an_error_not_caused_by_a_row_is_raised_not_split(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []

    def schema_missing(rows: Any) -> None:
        calls.append(len(rows))
        raise ProgrammingError('relation "telemetry_usagerecord" does not exist')

    monkeypatch.setattr(ledger, "_insert", schema_missing)

    with pytest.raises(ProgrammingError):
        ledger.write_events_isolating([event(at("2026-11-02 10:00")) for _ in range(8)])
    assert calls == [8]
