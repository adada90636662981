from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from governance import snapshots
from governance.pricing import Price, PriceBook, Rates, Usage, normalize_model_id
from governance.services import prices
from tests import factories

NOW = dt.datetime(2026, 11, 26, 12, 0, tzinfo=dt.UTC)
SONNET_45 = "claude-sonnet-4-5-20250929"


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)


@pytest.fixture
def book(db: None) -> PriceBook:
    """The price book as shipped: seeded by the migrations."""
    return snapshots.build_price_book()


def load(*entries: dict[str, Any], effective_from: str = "2026-06-01T00:00:00Z") -> None:
    prices.load_price_document(
        document={"effective_from": effective_from, "prices": list(entries)},
        actor=factories.TEST_ACTOR,
    )


def rates(per_mtok: int) -> Rates:
    return Rates(per_mtok, per_mtok, per_mtok, per_mtok, per_mtok)


def single_price(pattern: str, input_per_mtok: int, since: str = "2025-01-01") -> Price:
    return Price(pattern, at(since), Rates(input_per_mtok, 0, 0, 0, 0))


# --- the shipped price book, to the micro-dollar ----------------------------------------------


def test_shipped_book_has_every_price_in_the_file(book: PriceBook) -> None:
    import yaml

    document = yaml.safe_load(prices.DEFAULT_PRICE_FILE.read_text())
    assert len(book) == len(document["prices"])


@pytest.mark.parametrize(
    ("model", "usage", "micros"),
    [
        # 1000 in x $3 + 500 out x $15 = $0.003 + $0.0075
        (SONNET_45, Usage(input_tokens=1000, output_tokens=500), 10_500),
        # cache read 10,000 x $0.30
        (SONNET_45, Usage(cache_read_tokens=10_000), 3_000),
        # 5-minute cache write 2,000 x $3.75, 1-hour write 2,000 x $6
        (SONNET_45, Usage(cache_write_5m_tokens=2_000), 7_500),
        (SONNET_45, Usage(cache_write_1h_tokens=2_000), 12_000),
        # Opus 4.6, every category: 123x5 + 4567x25 + 8901x6.25 + 2345x10 + 67890x0.5
        # = 227,816.25 micro-dollars, rounded to 227,816
        (
            "claude-opus-4-6",
            Usage(
                input_tokens=123,
                output_tokens=4567,
                cache_write_5m_tokens=8901,
                cache_write_1h_tokens=2345,
                cache_read_tokens=67890,
            ),
            227_816,
        ),
        ("claude-opus-4-1-20250805", Usage(input_tokens=1_000_000), 15_000_000),
        ("claude-opus-4-20250514", Usage(output_tokens=1_000_000), 75_000_000),
        ("claude-haiku-4-5-20251001", Usage(input_tokens=1000, output_tokens=1000), 6_000),
        ("claude-3-5-haiku-20241022", Usage(cache_write_1h_tokens=1_000_000), 1_600_000),
        ("claude-sonnet-4-6", Usage(output_tokens=1), 15),
        ("claude-opus-4-6", Usage(), 0),
    ],
)
def test_shipped_prices_cost_to_the_micro_dollar(
    book: PriceBook, model: str, usage: Usage, micros: int
) -> None:
    assert book.cost_micros(model, usage, NOW) == micros


def test_cache_categories_are_priced_separately_from_input(book: PriceBook) -> None:
    tokens = 100_000
    costs = {
        name: book.cost_micros(SONNET_45, Usage(**{name: tokens}), NOW)
        for name in ("input_tokens", "cache_write_5m_tokens", "cache_write_1h_tokens")
    }
    costs["cache_read_tokens"] = book.cost_micros(SONNET_45, Usage(cache_read_tokens=tokens), NOW)

    assert costs == {
        "input_tokens": 300_000,
        "cache_write_5m_tokens": 375_000,
        "cache_write_1h_tokens": 600_000,
        "cache_read_tokens": 30_000,
    }


# --- long context -----------------------------------------------------------------------------


def test_sonnet_45_prompt_at_200k_uses_standard_rates(book: PriceBook) -> None:
    usage = Usage(input_tokens=150_000, cache_read_tokens=50_000, output_tokens=1_000)

    # 150,000 x $3 + 50,000 x $0.30 + 1,000 x $15
    assert book.cost_micros(SONNET_45, usage, NOW) == 480_000


def test_sonnet_45_prompt_above_200k_prices_the_whole_request_at_long_rates(
    book: PriceBook,
) -> None:
    usage = Usage(input_tokens=150_000, cache_read_tokens=50_001, output_tokens=1_000)

    # 150,000 x $6 + 50,001 x $0.60 + 1,000 x $22.50 = 952,500.6
    assert book.cost_micros(SONNET_45, usage, NOW) == 952_501


def test_long_context_counts_cache_writes_toward_the_threshold(book: PriceBook) -> None:
    usage = Usage(input_tokens=1, cache_write_5m_tokens=100_000, cache_write_1h_tokens=100_000)

    # 1 x $6 + 100,000 x $7.50 + 100,000 x $12
    assert book.cost_micros(SONNET_45, usage, NOW) == 1_950_006


def test_model_without_long_context_tier_keeps_standard_rates(book: PriceBook) -> None:
    usage = Usage(input_tokens=300_000)

    assert book.cost_micros("claude-sonnet-4-6", usage, NOW) == 900_000


# --- versions ---------------------------------------------------------------------------------


def test_newer_price_applies_only_from_its_effective_date(db: None) -> None:
    load(
        {
            "model": "claude-sonnet-4-5*",
            "input": "2",
            "output": "10",
            "cache_write_5m": "2.50",
            "cache_write_1h": "4",
            "cache_read": "0.20",
        }
    )
    book = snapshots.build_price_book()
    usage = Usage(input_tokens=100_000)

    assert book.cost_micros(SONNET_45, usage, at("2026-05-31T23:59:59")) == 300_000
    assert book.cost_micros(SONNET_45, usage, at("2026-06-01T00:00:00")) == 200_000
    assert book.cost_micros(SONNET_45, usage, NOW) == 200_000


def test_request_before_any_price_has_no_cost(book: PriceBook) -> None:
    assert book.cost_micros(SONNET_45, Usage(input_tokens=1), at("2024-12-31T23:59")) is None


def test_newer_exact_id_price_does_not_hide_the_older_pattern_price(db: None) -> None:
    load(
        {
            "model": SONNET_45,
            "input": "1",
            "output": "1",
            "cache_write_5m": "1",
            "cache_write_1h": "1",
            "cache_read": "1",
        }
    )
    book = snapshots.build_price_book()
    usage = Usage(input_tokens=100_000)

    assert book.cost_micros(SONNET_45, usage, at("2026-01-01T00:00")) == 300_000
    assert book.cost_micros(SONNET_45, usage, NOW) == 100_000


def test_versions_are_independent_of_insertion_order() -> None:
    old = single_price("claude-x*", 1, since="2025-01-01")
    new = single_price("claude-x*", 2, since="2026-01-01")

    for book in (PriceBook([old, new]), PriceBook([new, old])):
        assert book.price_for("claude-x-1", at("2025-06-01")) == old
        assert book.price_for("claude-x-1", at("2026-06-01")) == new


# --- model ids --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("provider_id", "anthropic_id"),
    [
        ("us.anthropic.claude-sonnet-4-5-20250929-v1:0", SONNET_45),
        ("global.anthropic.claude-sonnet-4-5-20250929-v1:0", SONNET_45),
        ("eu.anthropic.claude-haiku-4-5-20251001-v1:0", "claude-haiku-4-5-20251001"),
        ("anthropic.claude-3-5-haiku-20241022-v1:0", "claude-3-5-haiku-20241022"),
        ("anthropic.claude-opus-4-6-v1", "claude-opus-4-6"),
        (
            "arn:aws:bedrock:us-east-1:123456789012:inference-profile/"
            "us.anthropic.claude-opus-4-1-20250805-v1:0",
            "claude-opus-4-1-20250805",
        ),
        ("claude-sonnet-4-5@20250929", SONNET_45),
        ("publishers/anthropic/models/claude-opus-4-1@20250805", "claude-opus-4-1-20250805"),
        ("claude-opus-4-6", "claude-opus-4-6"),
    ],
)
def test_bedrock_and_vertex_ids_price_as_the_anthropic_id(
    book: PriceBook, provider_id: str, anthropic_id: str
) -> None:
    usage = Usage(input_tokens=12_345, output_tokens=678, cache_read_tokens=9_999)

    assert normalize_model_id(provider_id) == anthropic_id
    cost = book.cost_micros(provider_id, usage, NOW)
    assert cost is not None
    assert cost == book.cost_micros(anthropic_id, usage, NOW)


def test_exact_id_beats_a_pattern(db: None) -> None:
    load(
        {
            "model": SONNET_45,
            "input": "1",
            "output": "1",
            "cache_write_5m": "1",
            "cache_write_1h": "1",
            "cache_read": "1",
        },
        effective_from="2025-01-01T00:00:00Z",
    )
    book = snapshots.build_price_book()
    usage = Usage(input_tokens=100_000)

    assert book.cost_micros(SONNET_45, usage, NOW) == 100_000
    assert book.cost_micros("claude-sonnet-4-5-20991231", usage, NOW) == 300_000
    assert book.cost_micros(f"us.anthropic.{SONNET_45}-v1:0", usage, NOW) == 100_000


def test_longer_pattern_beats_a_shorter_one(book: PriceBook) -> None:
    usage = Usage(input_tokens=1_000_000)

    assert book.cost_micros("claude-opus-5-5-20270101", usage, NOW) == 4_000_000
    assert book.cost_micros("claude-opus-5-20270101", usage, NOW) == 5_000_000


def test_pattern_specificity_does_not_depend_on_insertion_order() -> None:
    short, long, exact = (
        single_price("claude-*", 1),
        single_price("claude-opus-*", 2),
        single_price("claude-opus-4-6", 3),
    )

    for order in ([short, long, exact], [exact, long, short], [long, short, exact]):
        book = PriceBook(order)
        assert book.price_for("claude-opus-4-6", NOW) == exact
        assert book.price_for("claude-opus-4-1", NOW) == long
        assert book.price_for("claude-haiku-4-5", NOW) == short


@pytest.mark.parametrize("model", ["gpt-4o", "claude-unknown-9", "", "us.anthropic.titan-v1:0"])
def test_unknown_model_has_no_price(book: PriceBook, model: str) -> None:
    assert book.price_for(model, NOW) is None
    assert book.cost_micros(model, Usage(input_tokens=1000), NOW) is None


# --- rounding ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("per_mtok", "tokens", "micros"),
    [
        (1_500_000, 1, 2),  # 1.5 rounds up
        (2_500_000, 1, 3),  # 2.5 rounds up too (not to even)
        (2_499_999, 1, 2),
        (500_000, 1, 1),
        (499_999, 1, 0),
        (100_000, 4, 0),
        (100_000, 5, 1),
        (3_000_000, 1_000_000, 3_000_000),
    ],
)
def test_cost_is_rounded_once_half_up(per_mtok: int, tokens: int, micros: int) -> None:
    price = Price("m", at("2025-01-01"), rates(per_mtok))

    assert price.cost_micros(Usage(input_tokens=tokens)) == micros


def test_rounding_happens_once_for_the_whole_request() -> None:
    price = Price("m", at("2025-01-01"), rates(400_000))
    usage = Usage(input_tokens=1, output_tokens=1, cache_read_tokens=1)

    # 0.4 + 0.4 + 0.4 = 1.2 micro-dollars: 1, where rounding each part would give 0.
    assert price.cost_micros(usage) == 1


def test_prompt_tokens_include_every_cache_category() -> None:
    usage = Usage(
        input_tokens=1,
        output_tokens=1000,
        cache_write_5m_tokens=10,
        cache_write_1h_tokens=100,
        cache_read_tokens=10_000,
    )

    assert usage.prompt_tokens == 10_111
