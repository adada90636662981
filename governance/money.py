"""Exact money: integer micro-dollars everywhere, Decimal at the edges, never floats."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

MICROS_PER_USD = 1_000_000


class MoneyError(ValueError):
    pass


def usd_to_micros(value: Decimal | int | str | float) -> int:
    """Convert a dollar amount to micro-dollars, refusing anything that is not exact.

    Floats are accepted only because YAML reads `12.5` as one; they are converted through
    their shortest repr, which is exactly what the user typed.
    """
    if isinstance(value, bool):
        raise MoneyError("a dollar amount must be a number, not a boolean")
    try:
        amount = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    except (InvalidOperation, ValueError, TypeError) as exc:  # TypeError: None, dicts (YAML)
        raise MoneyError(f"{value!r} is not a dollar amount") from exc
    if not amount.is_finite():
        raise MoneyError(f"{value!r} is not a dollar amount")
    micros = amount * MICROS_PER_USD
    if micros != micros.to_integral_value():
        raise MoneyError(f"{value!r} has more than 6 decimal places")
    return int(micros)


def micros_to_usd(micros: int) -> Decimal:
    return Decimal(micros) / MICROS_PER_USD


def format_usd(micros: int) -> str:
    """`$1,234.56` for display; sub-cent amounts keep their digits (`$0.00015`)."""
    usd = micros_to_usd(micros)
    if micros % 10_000 == 0:
        return f"${usd:,.2f}"
    return f"${usd:,.6f}".rstrip("0")
