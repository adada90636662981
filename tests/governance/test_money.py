from __future__ import annotations

from decimal import Decimal

import pytest

from governance.money import MoneyError, format_usd, micros_to_usd, usd_to_micros


@pytest.mark.parametrize(
    ("value", "micros"),
    [
        ("12.5", 12_500_000),
        ("0.000001", 1),
        ("3", 3_000_000),
        (3, 3_000_000),
        (0, 0),
        (Decimal("0.10"), 100_000),
        (Decimal("1E+3"), 1_000_000_000),
        ("20000", 20_000_000_000),
        ("99999999.999999", 99_999_999_999_999),
        # YAML reads `12.5` as a float: it is taken as typed, not as its binary value.
        (0.1, 100_000),
        (12.345678, 12_345_678),
        (0.3, 300_000),
        (1e-6, 1),
    ],
)
def test_dollars_convert_to_exact_micro_dollars(value: object, micros: int) -> None:
    assert usd_to_micros(value) == micros  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("1.0000001", "more than 6 decimal places"),
        (Decimal("0.0000005"), "more than 6 decimal places"),
        (0.1234567, "more than 6 decimal places"),
        ("abc", "not a dollar amount"),
        ("", "not a dollar amount"),
        ("NaN", "not a dollar amount"),
        ("Infinity", "not a dollar amount"),
        (float("inf"), "not a dollar amount"),
        (True, "not a boolean"),
        (None, "not a dollar amount"),
        ([1], "not a dollar amount"),
        ({"usd": 1}, "not a dollar amount"),
    ],
)
def test_inexact_or_non_numeric_amounts_are_refused(value: object, reason: str) -> None:
    with pytest.raises(MoneyError, match=reason):
        usd_to_micros(value)  # type: ignore[arg-type]


def test_money_error_is_a_value_error() -> None:
    assert issubclass(MoneyError, ValueError)


@pytest.mark.parametrize(
    ("micros", "usd"),
    [(1, Decimal("0.000001")), (1_500_000, Decimal("1.5")), (0, Decimal(0))],
)
def test_micros_convert_back_to_exact_dollars(micros: int, usd: Decimal) -> None:
    assert micros_to_usd(micros) == usd
    assert usd_to_micros(micros_to_usd(micros)) == micros


@pytest.mark.parametrize(
    ("micros", "text"),
    [
        (0, "$0.00"),
        (1_234_560_000, "$1,234.56"),
        (20_000_000_000, "$20,000.00"),
        (10_000, "$0.01"),
        (1_230_000, "$1.23"),
        (1_234_500, "$1.2345"),
        (12_345_678, "$12.345678"),
        (150, "$0.00015"),
        (1, "$0.000001"),
    ],
)
def test_format_usd_keeps_every_significant_digit(micros: int, text: str) -> None:
    assert format_usd(micros) == text
