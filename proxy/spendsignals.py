"""What Claude Code reads about budgets from the gateway's answers.

A refused request for an exhausted budget carries `x-should-retry: false` (the client shows the
message and does not retry) and `retry-after` (seconds to the budget's reset). A signed-in
Claude Code session (the /claude-code routes) also gets the fullest budget's utilisation in the
`anthropic-ratelimit-unified-*` headers it reads to warn at 75 % and 95 %, with the names and
formats Anthropic's own gateway uses (shared/CLAUDE-GATEWAY.md, Part 2 §5 and §6):

- utilisation = spend before this request / limit, to 2 decimals, held at 0.99 until the limit
  is passed; a threshold header names the first of 0.95, 0.75 it exceeds;
- reset = Unix seconds of the period's end (in the organization's time zone here);
- a refusal says `rejected`, the period, and `org_spend_cap_reached`.
"""

from __future__ import annotations

import datetime as dt
import math
from decimal import ROUND_HALF_UP, Decimal

from governance.periods import PeriodWindow
from governance.policy import BudgetRule

PREFIX = b"anthropic-ratelimit-unified-"
THRESHOLDS = (Decimal("0.95"), Decimal("0.75"))
PERIOD_NAMES = {
    "day": "daily",
    "week": "weekly",
    "month": "monthly",
    "quarter": "quarterly",
    "lifetime": "lifetime",
}
HUNDREDTH = Decimal("0.01")
HELD_AT = Decimal("0.99")


def retry_after_seconds(window: PeriodWindow, now: dt.datetime) -> int | None:
    if window.end is None:
        return None
    return max(1, math.ceil((window.end - now).total_seconds()))


def refusal_headers(window: PeriodWindow, now: dt.datetime) -> list[tuple[bytes, bytes]]:
    headers = [(b"x-should-retry", b"false")]
    seconds = retry_after_seconds(window, now)
    if seconds is not None:
        headers.append((b"retry-after", str(seconds).encode()))
    return headers


def utilization(used_micros: int, limit_micros: int, *, hold: bool) -> Decimal:
    if limit_micros <= 0:
        return Decimal(1)
    share = (Decimal(used_micros) / Decimal(limit_micros)).quantize(HUNDREDTH, ROUND_HALF_UP)
    if hold and used_micros <= limit_micros:
        share = min(share, HELD_AT)
    return share


def _number(value: Decimal) -> bytes:
    """As JavaScript's String(n) writes it: 0.5, 0.31, 0, 1, 21.7."""
    text = format(value.normalize(), "f")
    return text.encode()


def _reset(window: PeriodWindow) -> list[tuple[bytes, bytes]]:
    if window.end is None:
        return []
    seconds = str(int(window.end.timestamp())).encode()
    return [(PREFIX + b"reset", seconds), (PREFIX + b"overage-reset", seconds)]


def allowed_headers(
    rule: BudgetRule, window: PeriodWindow, used_micros: int
) -> list[tuple[bytes, bytes]]:
    """A successful answer: the fullest budget's utilisation before this request."""
    share = utilization(used_micros, rule.amount_micros, hold=True)
    threshold = next((t for t in THRESHOLDS if share > t), None)
    status = b"allowed_warning" if threshold is not None else b"allowed"
    headers = [(PREFIX + b"status", status), *_reset(window)]
    headers.append((PREFIX + b"overage-utilization", _number(share)))
    if threshold is not None:
        headers.append((PREFIX + b"overage-surpassed-threshold", _number(threshold)))
    headers += [
        (PREFIX + b"representative-claim", b"overage"),
        (PREFIX + b"overage-status", status),
    ]
    return headers


def rejected_headers(
    rule: BudgetRule, window: PeriodWindow, used_micros: int
) -> list[tuple[bytes, bytes]]:
    """A refusal for an exhausted budget, as Claude Code's gateway mode reads it."""
    share = utilization(used_micros, rule.amount_micros, hold=False)
    return [
        (PREFIX + b"status", b"rejected"),
        *_reset(window),
        (PREFIX + b"overage-utilization", _number(share)),
        (PREFIX + b"overage-surpassed-threshold", b"1"),
        (PREFIX + b"overage-period", PERIOD_NAMES[rule.period].encode()),
        (PREFIX + b"overage-disabled-reason", b"org_spend_cap_reached"),
    ]


class SessionShape:
    """The answers of a signed-in Claude Code session: as the upstream sent them, but with
    the upstream's own rate-limit headers replaced by the developer's budget utilisation."""

    def __init__(self) -> None:
        self.signals: list[tuple[bytes, bytes]] = []

    def reply(self, status: int, body: bytes) -> tuple[int, bytes]:
        return status, body

    def stream(self) -> _Unchanged:
        return _Unchanged()

    def headers(self, headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        kept = [(n, v) for n, v in headers if not n.startswith(b"anthropic-ratelimit-")]
        return kept + self.signals


class _Unchanged:
    def feed(self, chunk: bytes) -> bytes:
        return chunk

    def close(self) -> bytes:
        return b""
