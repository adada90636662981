"""Cost of a request in exact micro-dollars from a versioned price book.

Prices are integer micro-dollars per million tokens, so a request's exact cost is an integer
number of 1e-12 dollars; it is rounded once, half up, to whole micro-dollars.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import re
from dataclasses import dataclass

TOKENS_PER_MTOK = 1_000_000

# Provider-specific ids map onto the Anthropic id the price book uses:
# "us.anthropic.claude-sonnet-4-5-20250929-v1:0" and "claude-sonnet-4-5@20250929" both price
# as "claude-sonnet-4-5-20250929".
_BEDROCK_GEO = re.compile(r"^(?:[a-z-]+\.)?anthropic\.")
_BEDROCK_SUFFIX = re.compile(r"-v\d+(?::\d+)?$")


def normalize_model_id(model: str) -> str:
    model = model.rsplit("/", 1)[-1]  # ARNs and publisher paths
    model = _BEDROCK_GEO.sub("", model)
    model = _BEDROCK_SUFFIX.sub("", model)
    return model.replace("@", "-")


@dataclass(slots=True)  # not frozen: made per request, and frozen costs 3x to build
class Usage:
    """Anthropic-shaped token counts: input_tokens excludes every cache category."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_write_5m_tokens: int = 0
    cache_write_1h_tokens: int = 0
    cache_read_tokens: int = 0

    @property
    def prompt_tokens(self) -> int:
        return (
            self.input_tokens
            + self.cache_write_5m_tokens
            + self.cache_write_1h_tokens
            + self.cache_read_tokens
        )


@dataclass(frozen=True, slots=True)
class Rates:
    input: int
    output: int
    cache_write_5m: int
    cache_write_1h: int
    cache_read: int


@dataclass(frozen=True, slots=True)
class Price:
    model_pattern: str
    effective_from: dt.datetime
    standard: Rates
    long_context_threshold: int | None = None
    long_context: Rates | None = None

    def rates_for(self, usage: Usage) -> Rates:
        if (
            self.long_context is not None
            and self.long_context_threshold is not None
            and usage.prompt_tokens > self.long_context_threshold
        ):
            return self.long_context
        return self.standard

    def cost_micros(self, usage: Usage) -> int:
        rates = self.rates_for(usage)
        picos = (
            usage.input_tokens * rates.input
            + usage.output_tokens * rates.output
            + usage.cache_write_5m_tokens * rates.cache_write_5m
            + usage.cache_write_1h_tokens * rates.cache_write_1h
            + usage.cache_read_tokens * rates.cache_read
        )
        return (picos + TOKENS_PER_MTOK // 2) // TOKENS_PER_MTOK


class PriceBook:
    """All price versions, answering 'what did this model cost at that moment'."""

    def __init__(self, prices: list[Price]) -> None:
        # Exact ids before patterns; among patterns the longest literal part is most specific.
        self._prices = sorted(
            prices,
            key=lambda p: (
                -_specificity(p.model_pattern),
                p.model_pattern,
                -p.effective_from.timestamp(),
            ),
        )
        # Model id -> the versions whose pattern matches it, in the order above. The hot path
        # prices every request; matching each pattern with fnmatch every time was a visible
        # share of a request's CPU. Bounded: model ids come from clients.
        self._matching: dict[str, tuple[Price, ...]] = {}

    def __len__(self) -> int:
        return len(self._prices)

    def price_for(self, model: str, at: dt.datetime) -> Price | None:
        """The most specific pattern with a version in force at `at`, newest version first.

        A pattern whose versions all start after `at` is skipped, so adding a more specific
        price later never leaves earlier requests without one.
        """
        matching = self._matching.get(model)
        if matching is None:
            normalized = normalize_model_id(model)
            matching = tuple(
                p for p in self._prices if fnmatch.fnmatchcase(normalized, p.model_pattern)
            )
            if len(self._matching) >= 4096:
                self._matching.clear()
            self._matching[model] = matching
        for price in matching:
            if price.effective_from <= at:
                return price
        return None

    def cost_micros(self, model: str, usage: Usage, at: dt.datetime) -> int | None:
        price = self.price_for(model, at)
        return None if price is None else price.cost_micros(usage)

    def fallback_price(self, model: str, at: dt.datetime, fallback_model: str = "") -> Price | None:
        """The price an unpriced `model` is charged at when its organization chose "fallback":
        `fallback_model`'s price when given and priced, else the most expensive price in force
        of the model's family ("claude-opus" for "claude-opus-9"), else the most expensive of
        all. Erring high: an estimated cost must not let spend slip under a budget."""
        if fallback_model:
            price = self.price_for(fallback_model, at)
            if price is not None:
                return price
        in_force = self._in_force(at)
        family = _family(normalize_model_id(model))
        kin = [p for p in in_force if family and _family(p.model_pattern) == family]
        return max(kin or in_force, key=_expense, default=None)

    def _in_force(self, at: dt.datetime) -> list[Price]:
        """The newest version in force at `at` of every pattern."""
        newest: dict[str, Price] = {}
        for price in self._prices:  # newest version first within a pattern
            if price.effective_from <= at and price.model_pattern not in newest:
                newest[price.model_pattern] = price
        return list(newest.values())


_FAMILY = re.compile(r"^[a-z]+(?:-[a-z]+)*")


def _family(model: str) -> str:
    """The name up to the first version number: "claude-opus" for "claude-opus-4-6*"."""
    match = _FAMILY.match(model)
    family = match.group(0).rstrip("-") if match else ""
    # A bare vendor name ("claude" of "claude-3-7-sonnet", "gpt") spans every tier: no family.
    return family if "-" in family else ""


def _expense(price: Price) -> tuple[int, int]:
    return price.standard.output, price.standard.input


def _specificity(pattern: str) -> int:
    wildcard = any(char in pattern for char in "*?[")
    literal = len(pattern.replace("*", "").replace("?", ""))
    return literal + (0 if wildcard else 1000)
