from __future__ import annotations

import datetime as dt
import textwrap
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
import yaml
from django.core.management import call_command
from django.core.management.base import CommandError

from governance import snapshots
from governance.models import AuditEvent, ModelPrice
from governance.pricing import Usage
from governance.services import audit, prices

pytestmark = pytest.mark.django_db

SHIPPED_COUNT = len(yaml.safe_load(prices.DEFAULT_PRICE_FILE.read_text())["prices"])
GOOD = (
    '{model: "claude-new-1*", input: "1", output: "5", cache_write_5m: "1.25", '
    'cache_write_1h: "2", cache_read: "0.10"}'
)


def load_prices(*args: str) -> str:
    out = StringIO()
    call_command("load_prices", *args, stdout=out)
    return out.getvalue()


def price_file(tmp_path: Path, body: str, name: str = "prices.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return path


def state() -> tuple[list[dict[str, Any]], int]:
    rows = [dict(row) for row in ModelPrice.objects.order_by("id").values()]
    return rows, AuditEvent.objects.count()


def test_shipped_file_is_already_loaded_by_the_migrations() -> None:
    assert ModelPrice.objects.count() == SHIPPED_COUNT

    out = load_prices()

    assert f"0 created, 0 updated, {SHIPPED_COUNT} unchanged." in out


def test_loading_the_shipped_file_twice_changes_nothing() -> None:
    load_prices()
    before = state()

    out = load_prices(str(prices.DEFAULT_PRICE_FILE))

    assert f"0 created, 0 updated, {SHIPPED_COUNT} unchanged." in out
    assert state() == before


def test_file_with_a_new_version_adds_rows(tmp_path: Path) -> None:
    path = price_file(
        tmp_path,
        """\
        effective_from: "2026-12-01T00:00:00Z"
        prices:
          - {model: "claude-sonnet-4-5*", input: "2", output: "10", cache_write_5m: "2.50", cache_write_1h: "4", cache_read: "0.20"}
          - {model: "claude-haiku-4-5*", input: "0.80", output: "4", cache_write_5m: "1", cache_write_1h: "1.60", cache_read: "0.08"}
        """,  # noqa: E501
    )

    out = load_prices(str(path))

    assert "2 created, 0 updated, 0 unchanged." in out
    assert ModelPrice.objects.count() == SHIPPED_COUNT + 2
    new = ModelPrice.objects.get(
        model_pattern="claude-sonnet-4-5*", effective_from=dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
    )
    assert (new.input_per_mtok, new.cache_read_per_mtok) == (2_000_000, 200_000)
    assert new.long_context_threshold is None
    loaded = AuditEvent.objects.filter(verb=AuditEvent.Verb.PRICES_LOADED).get()
    assert loaded.actor == "command:load_prices"
    assert "2 created" in loaded.note
    assert audit.verify_chain().ok
    assert "0 unchanged" not in load_prices(str(path))


def test_new_version_prices_only_later_requests(tmp_path: Path) -> None:
    path = price_file(
        tmp_path,
        """\
        prices:
          - {model: "claude-haiku-4-5*", effective_from: "2026-12-01", input: "2", output: "4", cache_write_5m: "1", cache_write_1h: "1.60", cache_read: "0.08"}
        """,  # noqa: E501
    )
    load_prices(str(path))
    book = snapshots.build_price_book()
    usage = Usage(input_tokens=1_000_000)

    assert book.cost_micros("claude-haiku-4-5", usage, dt.datetime(2026, 11, 30, tzinfo=dt.UTC))
    assert (
        book.cost_micros("claude-haiku-4-5", usage, dt.datetime(2026, 11, 30, tzinfo=dt.UTC))
        == 1_000_000
    )
    assert (
        book.cost_micros("claude-haiku-4-5", usage, dt.datetime(2026, 12, 1, tzinfo=dt.UTC))
        == 2_000_000
    )


def test_changed_price_for_an_existing_version_is_updated(tmp_path: Path) -> None:
    path = price_file(
        tmp_path,
        """\
        effective_from: "2025-01-01T00:00:00Z"
        prices:
          - {model: "claude-haiku-4-5*", input: "1", output: "5", cache_write_5m: "1.25", cache_write_1h: "2", cache_read: "0.11"}
        """,  # noqa: E501
    )

    out = load_prices(str(path))

    assert "0 created, 1 updated, 0 unchanged." in out
    row = ModelPrice.objects.get(model_pattern="claude-haiku-4-5*")
    assert row.cache_read_per_mtok == 110_000


def test_version_written_with_a_utc_offset_reloads_as_unchanged(tmp_path: Path) -> None:
    path = price_file(
        tmp_path,
        f"""\
        effective_from: "2026-12-01T00:00:00+01:00"
        prices:
          - {GOOD}
        """,
    )
    load_prices(str(path))
    before = state()

    out = load_prices(str(path))

    assert "0 created, 0 updated, 1 unchanged." in out
    assert state() == before


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        (
            '- {model: "claude-x*", input: "1", cache_write_5m: "1", cache_write_1h: "1", '
            'cache_read: "1"}',
            "prices[1].output is required",
        ),
        (
            '- {model: "claude-x*", input: "1", output: "1", cache_write_5m: "1", '
            'cache_write_1h: "1", cache_read: "0.3000001"}',
            "prices[1].cache_read: '0.3000001' has more than 6 decimal places",
        ),
        (
            '- {model: "claude-x*", input: 0.1234567, output: "1", cache_write_5m: "1", '
            'cache_write_1h: "1", cache_read: "1"}',
            "prices[1].input: 0.1234567 has more than 6 decimal places",
        ),
        (
            '- {model: "claude-x*", input: null, output: "1", cache_write_5m: "1", '
            'cache_write_1h: "1", cache_read: "1"}',
            "prices[1].input: None is not a dollar amount",
        ),
        (
            '- {input: "1", output: "1", cache_write_5m: "1", cache_write_1h: "1", '
            'cache_read: "1"}',
            "prices[1]: each price needs a `model`",
        ),
        (
            '- {model: "claude-x*", effective_from: "next tuesday", input: "1", output: "1", '
            'cache_write_5m: "1", cache_write_1h: "1", cache_read: "1"}',
            "prices[1].effective_from: 'next tuesday' is not a date-time",
        ),
        (
            '- {model: "claude-x*", input: "1", output: "1", cache_write_5m: "1", '
            'cache_write_1h: "1", cache_read: "1", long_context: {input: "2"}}',
            "prices[1].long_context needs a `threshold`",
        ),
        (
            '- {model: "claude-x*", input: "1", output: "1", cache_write_5m: "1", '
            'cache_write_1h: "1", cache_read: "1", long_context: {threshold: lots, input: "2", '
            'output: "2", cache_write_5m: "2", cache_write_1h: "2", cache_read: "2"}}',
            "prices[1].long_context.threshold",
        ),
        (
            '- {model: "claude-x*", input: "1", output: "1", cache_write_5m: "1", '
            'cache_write_1h: "1", cache_read: "1", long_context: {threshold: 1000, input: "2", '
            'output: "2", cache_write_5m: "2", cache_write_1h: "2"}}',
            "prices[1].long_context.cache_read is required",
        ),
    ],
)
def test_bad_entry_fails_naming_it_and_changes_nothing(
    tmp_path: Path, entries: str, message: str
) -> None:
    # The first entry is valid and new: it must be rolled back with the rest.
    path = price_file(tmp_path, f"prices:\n  - {GOOD}\n  {entries}\n")
    before = state()

    with pytest.raises(CommandError) as error:
        load_prices(str(path))

    assert message in str(error.value)
    assert str(path) in str(error.value)
    assert state() == before


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("prices: nope\n", "top-level `prices:` list"),
        ("- just a list\n", "top-level `prices:` list"),
        ("", "top-level `prices:` list"),
        ('effective_from: "someday"\nprices: []\n', "effective_from: 'someday'"),
        ("prices: [ {model: x\n", "not valid YAML"),
    ],
)
def test_malformed_file_fails_with_a_command_error(tmp_path: Path, body: str, message: str) -> None:
    path = price_file(tmp_path, body)
    before = state()

    with pytest.raises(CommandError, match=message):
        load_prices(str(path))

    assert state() == before


def test_missing_file_is_a_command_error(tmp_path: Path) -> None:
    with pytest.raises(CommandError, match="No price file"):
        load_prices(str(tmp_path / "absent.yaml"))
