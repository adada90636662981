"""Turn a key's policy and a request into one atomic admission question, and answer refusals.

Reservation: before forwarding, every budget in the chain reserves an estimate of the
request's cost: the prompt priced as uncached input (body bytes / 3, which over-counts tokens)
plus min(max_tokens, GATEWAY_RESERVE_OUTPUT_TOKENS) output tokens. After the response the
reservation is replaced by the actual cost. A request is refused when settled + reserved +
its own estimate would pass the limit.

Overshoot bound: a budget can end above its limit only by what in-flight requests cost beyond
their estimates, i.e. at most (requests in flight) x (max_tokens - reserved output tokens) x
output price. With GATEWAY_STRICT_BUDGETS=1 the full max_tokens is reserved and the bound is 0
(up to the prompt estimate, which over-counts).
"""

from __future__ import annotations

import datetime as dt
import math
import zoneinfo
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from governance import periods
from governance.money import format_usd
from governance.policy import BudgetRule, KeyPolicy, RateLimitRule
from governance.pricing import Price
from proxy import spendsignals
from proxy.counters.base import (
    AdmissionPlan,
    AdmissionResult,
    BudgetCharge,
    CounterStore,
    CounterStoreUnavailable,
    Outcome,
    RateCharge,
    RateKind,
)
from proxy.errors import GatewayError
from proxy.hotsettings import hot

BUDGET_COUNTER_GRACE_SECONDS = 35 * 86400  # keep a closed period's counter for reports
CONCURRENCY_TTL_SECONDS = 600  # frees slots of a crashed process
PERIOD_WORDS = {
    "day": "daily",
    "week": "weekly",
    "month": "monthly",
    "quarter": "quarterly",
    "lifetime": "lifetime",
}

SeedFunction = Callable[[BudgetRule, periods.PeriodWindow], Awaitable[int]]


@dataclass(slots=True)  # not frozen: made per request, and frozen costs 3x to build
class Estimate:
    reserve_micros: int
    tokens: int


def estimate(
    *, body_size: int, max_tokens: int, price: Price | None, reserve_output: int, strict: bool
) -> Estimate:
    prompt_tokens = body_size // 3 + 1
    output_tokens = max_tokens if strict else min(max_tokens, reserve_output)
    if price is None:
        return Estimate(reserve_micros=0, tokens=prompt_tokens)
    rates = price.standard
    picos = prompt_tokens * rates.input + output_tokens * rates.output
    return Estimate(reserve_micros=math.ceil(picos / 1_000_000), tokens=prompt_tokens)


@dataclass(frozen=True, slots=True)
class PlannedBudget:
    rule: BudgetRule
    window: periods.PeriodWindow


@dataclass(slots=True)  # not frozen: made per request, and frozen costs 3x to build
class Plan:
    counters: AdmissionPlan
    budgets: tuple[PlannedBudget, ...]
    rate_rules: tuple[tuple[RateLimitRule, RateKind], ...]


_windows: dict[tuple[str, str], periods.PeriodWindow] = {}


def _window(period: str, tz_name: str, now: dt.datetime) -> periods.PeriodWindow:
    """periods.window, reused while `now` stays inside the cached period.

    The window is a pure function of the period containing `now`; computing it per budget per
    request (time-zone conversions) was a visible share of admission (benchmarks/README.md).
    """
    cached = _windows.get((period, tz_name))
    if (
        cached is not None
        and (cached.start is None or cached.start <= now)
        and (cached.end is None or now < cached.end)
    ):
        return cached
    window = periods.window(period, tz_name, now)
    if len(_windows) >= 1024:
        _windows.clear()
    _windows[(period, tz_name)] = window
    return window


# (budget id, period label) -> what a charge of that budget in that period always has: its
# planned budget, counter key and ttl. Built once per period instead of on every request
# (window lookups, datetime arithmetic and string formatting were a visible share of CPU).
_static_charges: dict[tuple[int, str], tuple[PlannedBudget, str, int]] = {}


def _static_charge(
    rule: BudgetRule, tz_name: str, now: dt.datetime
) -> tuple[PlannedBudget, str, int]:
    window = _window(rule.period, tz_name, now)
    cached = _static_charges.get((rule.budget_id, window.label))
    if cached is not None and cached[0].rule is rule:
        return cached
    ttl = 0
    if window.end is not None:
        ttl = int((window.end - now).total_seconds()) + BUDGET_COUNTER_GRACE_SECONDS
    cached = (PlannedBudget(rule, window), f"b:{rule.budget_id}:{window.label}", ttl)
    if len(_static_charges) >= 65_536:
        _static_charges.clear()
    _static_charges[(rule.budget_id, window.label)] = cached
    return cached


def budget_charges(
    *, policy: KeyPolicy, model: str, provider: str, est: Estimate, now: dt.datetime
) -> tuple[tuple[PlannedBudget, ...], tuple[BudgetCharge, ...]]:
    """The budgets a request for `model` (the governed model) served by `provider` is held
    to, and what each reserves."""
    budgets: list[PlannedBudget] = []
    charges: list[BudgetCharge] = []
    reserve = est.reserve_micros
    for rule in policy.budgets_for(model=model, provider=provider):
        planned, key, ttl = _static_charge(rule, policy.timezone, now)
        budgets.append(planned)
        charges.append(
            BudgetCharge(key, rule.amount_micros, reserve, ttl, rule.on_exhaust != "alert")
        )
    return tuple(budgets), tuple(charges)


ALL_RATE_KINDS = frozenset(RateKind)


# (limit rule, minute, kinds) -> its charges but the tokens-per-minute amount, and its rules:
# the same for every request of a key within a minute, so built once (cleared every minute).
_static_rates: dict[
    tuple[RateLimitRule, frozenset[RateKind]],
    tuple[int, tuple[RateCharge, ...], tuple[tuple[RateLimitRule, RateKind], ...]],
] = {}


def _rates_of(
    limit: RateLimitRule, kinds: frozenset[RateKind], minute: int, window_left: int
) -> tuple[tuple[RateCharge, ...], tuple[tuple[RateLimitRule, RateKind], ...]]:
    cached = _static_rates.get((limit, kinds))
    if cached is not None and cached[0] == minute:
        return cached[1], cached[2]
    base = f"r:{limit.scope}:{limit.owner_id}"
    rates: list[RateCharge] = []
    rules: list[tuple[RateLimitRule, RateKind]] = []
    if limit.requests_per_minute and RateKind.REQUESTS in kinds:
        rates.append(
            RateCharge(
                f"{base}:rpm:{minute}",
                RateKind.REQUESTS,
                limit.requests_per_minute,
                1,
                window_left,
            )
        )
        rules.append((limit, RateKind.REQUESTS))
    if limit.tokens_per_minute and RateKind.TOKENS in kinds:
        # The amount (the request's estimated tokens) is filled in per request.
        rates.append(
            RateCharge(
                f"{base}:tpm:{minute}", RateKind.TOKENS, limit.tokens_per_minute, 0, window_left
            )
        )
        rules.append((limit, RateKind.TOKENS))
    if limit.concurrent and RateKind.CONCURRENT in kinds:
        rates.append(
            RateCharge(
                f"{base}:conc", RateKind.CONCURRENT, limit.concurrent, 1, CONCURRENCY_TTL_SECONDS
            )
        )
        rules.append((limit, RateKind.CONCURRENT))
    if len(_static_rates) >= 65_536:
        _static_rates.clear()
    _static_rates[(limit, kinds)] = (minute, tuple(rates), tuple(rules))
    return tuple(rates), tuple(rules)


def rate_charges(
    *,
    policy: KeyPolicy,
    est: Estimate,
    now: dt.datetime,
    kinds: frozenset[RateKind] = ALL_RATE_KINDS,
) -> tuple[tuple[tuple[RateLimitRule, RateKind], ...], tuple[RateCharge, ...]]:
    if not policy.rate_limits:
        return (), ()
    epoch = now.timestamp()
    minute = int(epoch // 60)
    window_left = 60 - int(epoch % 60) + 1
    rates: list[RateCharge] = []
    rate_rules: list[tuple[RateLimitRule, RateKind]] = []
    for limit in policy.rate_limits:
        charges, rules = _rates_of(limit, kinds, minute, window_left)
        for charge in charges:
            if charge.kind == RateKind.TOKENS:  # built directly: _replace costs twice as much
                charge = RateCharge(  # noqa: PLW2901
                    charge.key, charge.kind, charge.limit, est.tokens, charge.ttl_seconds
                )
            rates.append(charge)
        rate_rules.extend(rules)
    return tuple(rate_rules), tuple(rates)


def build_plan(
    *,
    policy: KeyPolicy,
    model: str,
    provider: str,
    est: Estimate,
    now: dt.datetime,
    reservation_id: str = "",
    budgets: bool = True,
    rate_kinds: frozenset[RateKind] = ALL_RATE_KINDS,
) -> Plan:
    planned, charges = (
        budget_charges(policy=policy, model=model, provider=provider, est=est, now=now)
        if budgets
        else ((), ())
    )
    rate_rules, rates = rate_charges(policy=policy, est=est, now=now, kinds=rate_kinds)
    counters = AdmissionPlan(
        charges,
        rates,
        reservation_id=reservation_id,
        reservation_ttl_seconds=hot.reservation_ttl_seconds,
    )
    return Plan(counters, planned, rate_rules)


async def admit(*, store: CounterStore, plan: Plan, seed: SeedFunction) -> AdmissionResult:
    """Ask the store; counters missing (new period, restarted Redis) are seeded from the ledger."""
    for _ in range(3):
        result = await store.admit(plan.counters)
        if result.outcome != Outcome.COUNTERS_MISSING:
            return result
        for index in result.missing:
            planned = plan.budgets[index]
            charge = plan.counters.budgets[index]
            try:
                spent = await seed(planned.rule, planned.window)
            except Exception as exc:
                # The ledger (database) is unreachable: the counter cannot be seeded, which is
                # the same situation for admission as an unreachable counter store.
                raise CounterStoreUnavailable(f"seeding from the ledger failed: {exc!r}") from exc
            await store.seed_budget(charge.key, spent, charge.ttl_seconds)
    raise CounterStoreUnavailable("budget counters could not be seeded")


def budget_refusal(*, plan: Plan, result: AdmissionResult, policy: KeyPolicy) -> GatewayError:
    planned = plan.budgets[result.index]
    rule, window = planned.rule, planned.window
    charge = plan.counters.budgets[result.index]
    tier = f" for {', '.join(rule.model_patterns)}" if rule.model_patterns else ""
    message = (
        f'Budget exhausted: {rule.scope} "{rule.owner_name}" {PERIOD_WORDS[rule.period]} budget'
        f"{tier} of {format_usd(rule.amount_micros)} has {format_usd(result.current)} spent"
    )
    if result.current < rule.amount_micros:
        message += f" and this request may cost up to {format_usd(charge.reserve_micros)}"
    if window.end is None:
        message += ". It is a lifetime budget and does not reset; ask an admin to raise it."
    else:
        local = window.end.astimezone(zoneinfo.ZoneInfo(policy.timezone))
        message += f". It resets on {local:%Y-%m-%d %H:%M} {policy.timezone}."
    # Not worth retrying before the reset: Claude Code shows the message and stops.
    headers = spendsignals.refusal_headers(window, dt.datetime.now(dt.UTC))
    headers += spendsignals.rejected_headers(rule, window, result.current)
    return GatewayError(402, "billing_error", message, headers=headers)


def rate_refusal(*, plan: Plan, result: AdmissionResult) -> GatewayError:
    rule, kind = plan.rate_rules[result.index]
    what = {
        RateKind.REQUESTS: f"{rule.requests_per_minute} requests per minute",
        RateKind.TOKENS: f"{rule.tokens_per_minute} tokens per minute",
        RateKind.CONCURRENT: f"{rule.concurrent} concurrent requests",
    }[kind]
    retry_after = (
        1 if kind == RateKind.CONCURRENT else max(1, math.ceil(result.retry_after_ms / 1000))
    )
    return GatewayError(
        429,
        "rate_limit_error",
        f'Rate limit reached: {rule.scope} "{rule.owner_name}" allows {what}. '
        f"Retry in {retry_after} s.",
        headers=[(b"retry-after", str(retry_after).encode())],
    )
