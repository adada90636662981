"""Admission without a server: the estimate, the plan's counter keys, and the refusal messages."""

from __future__ import annotations

import datetime as dt
import math

import pytest

from governance.policy import BudgetRule, KeyPolicy, RateLimitRule
from governance.pricing import Price, Rates
from proxy import admission
from proxy.counters import CounterStoreUnavailable
from proxy.counters.base import AdmissionResult, Outcome, RateKind
from proxy.counters.memory import MemoryCounterStore

SONNET = Price(
    model_pattern="claude-sonnet-4-6*",
    effective_from=dt.datetime(2025, 1, 1, tzinfo=dt.UTC),
    standard=Rates(
        input=3_000_000,
        output=15_000_000,
        cache_write_5m=3_750_000,
        cache_write_1h=6_000_000,
        cache_read=300_000,
    ),
)
# 2026-11-30 23:30 UTC is already December 1st in Tokyo, still November 30th in New York.
MONTH_END = dt.datetime(2026, 11, 30, 23, 30, 15, tzinfo=dt.UTC)


def rule(budget_id: int = 1, **fields: object) -> BudgetRule:
    values: dict[str, object] = {
        "budget_id": budget_id,
        "scope": "team",
        "owner_id": 3,
        "owner_name": "backend",
        "amount_micros": 100_000_000,
        "period": "month",
    }
    values.update(fields)
    return BudgetRule(**values)  # type: ignore[arg-type]


def policy(
    *budgets: BudgetRule, timezone: str = "Europe/Berlin", rates: tuple[RateLimitRule, ...] = ()
) -> KeyPolicy:
    return KeyPolicy(
        key_id=7,
        key_name="vk-backend",
        prefix="sk-gw-abc",
        organization_id=1,
        organization_name="acme",
        timezone=timezone,
        fail_open=False,
        budgets=budgets,
        rate_limits=rates,
    )


def plan_for(key_policy: KeyPolicy, now: dt.datetime = MONTH_END) -> admission.Plan:
    est = admission.Estimate(reserve_micros=500, tokens=40)
    return admission.build_plan(
        policy=key_policy, model="claude-sonnet-4-6", provider="anthropic", est=est, now=now
    )


# --- estimate ------------------------------------------------------------------------------


def test_estimate_prices_body_bytes_over_three_plus_capped_output() -> None:
    est = admission.estimate(
        body_size=3000, max_tokens=32_000, price=SONNET, reserve_output=4096, strict=False
    )

    prompt = 3000 // 3 + 1
    assert est.tokens == prompt
    assert est.reserve_micros == math.ceil((prompt * 3_000_000 + 4096 * 15_000_000) / 1_000_000)


def test_estimate_reserves_max_tokens_when_it_is_below_the_cap() -> None:
    est = admission.estimate(
        body_size=10, max_tokens=100, price=SONNET, reserve_output=4096, strict=False
    )

    assert est.reserve_micros == math.ceil((4 * 3_000_000 + 100 * 15_000_000) / 1_000_000)


def test_strict_estimate_reserves_the_full_max_tokens() -> None:
    est = admission.estimate(
        body_size=10, max_tokens=32_000, price=SONNET, reserve_output=4096, strict=True
    )

    assert est.reserve_micros == 4 * 3 + 32_000 * 15


def test_estimate_rounds_sub_micro_costs_up() -> None:
    cheap = Price(
        model_pattern="x",
        effective_from=SONNET.effective_from,
        standard=Rates(input=1, output=1, cache_write_5m=1, cache_write_1h=1, cache_read=1),
    )

    est = admission.estimate(body_size=0, max_tokens=1, price=cheap, reserve_output=1, strict=False)

    assert est.reserve_micros == 1


def test_estimate_without_a_price_reserves_nothing_but_counts_tokens() -> None:
    est = admission.estimate(
        body_size=299, max_tokens=10, price=None, reserve_output=4096, strict=False
    )

    assert est == admission.Estimate(reserve_micros=0, tokens=100)


# --- build_plan ----------------------------------------------------------------------------


def test_budget_keys_carry_the_period_label_of_the_org_time_zone() -> None:
    budgets = (
        rule(1, period="month"),
        rule(2, period="day"),
        rule(3, period="quarter"),
        rule(4, period="week"),
    )

    tokyo = plan_for(policy(*budgets, timezone="Asia/Tokyo"))
    new_york = plan_for(policy(*budgets, timezone="America/New_York"))

    assert [c.key for c in tokyo.counters.budgets] == [
        "b:1:2026-12",
        "b:2:2026-12-01",
        "b:3:2026-Q4",
        "b:4:2026-W49",
    ]
    assert [c.key for c in new_york.counters.budgets] == [
        "b:1:2026-11",
        "b:2:2026-11-30",
        "b:3:2026-Q4",
        "b:4:2026-W49",  # Monday November 30th
    ]


def test_budget_counters_expire_after_their_period_plus_grace() -> None:
    plan = plan_for(policy(rule(1, period="month"), rule(2, period="lifetime"), timezone="UTC"))

    monthly, lifetime = plan.counters.budgets
    end = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
    assert monthly.ttl_seconds == int((end - MONTH_END).total_seconds()) + (
        admission.BUDGET_COUNTER_GRACE_SECONDS
    )
    assert (lifetime.key, lifetime.ttl_seconds) == ("b:2:lifetime", 0)


def test_plan_reserves_the_estimate_on_every_matching_budget() -> None:
    plan = plan_for(
        policy(
            rule(1),
            rule(2, on_exhaust="alert"),
            rule(3, model_patterns=("claude-opus-*",)),
            rule(4, provider_names=("bedrock",)),
            rule(5, model_patterns=("claude-sonnet-*",), provider_names=("anthropic",)),
        )
    )

    charges = plan.counters.budgets
    assert [c.key.split(":")[1] for c in charges] == ["1", "2", "5"]
    assert {c.reserve_micros for c in charges} == {500}
    assert [c.enforce for c in charges] == [True, False, True]
    assert [c.limit_micros for c in charges] == [100_000_000] * 3


def test_rate_limits_become_minute_and_concurrency_charges() -> None:
    limits = RateLimitRule(
        scope="key",
        owner_id=7,
        owner_name="vk-backend",
        requests_per_minute=60,
        tokens_per_minute=10_000,
        concurrent=4,
    )

    plan = plan_for(policy(rates=(limits,)))

    minute = int(MONTH_END.timestamp() // 60)
    rpm, tpm, conc = plan.counters.rates
    assert (rpm.key, rpm.kind, rpm.limit, rpm.amount) == (
        f"r:key:7:rpm:{minute}",
        RateKind.REQUESTS,
        60,
        1,
    )
    assert (tpm.key, tpm.kind, tpm.limit, tpm.amount) == (
        f"r:key:7:tpm:{minute}",
        RateKind.TOKENS,
        10_000,
        40,
    )
    assert rpm.ttl_seconds == tpm.ttl_seconds == 60 - 15 + 1
    assert (conc.key, conc.kind, conc.limit, conc.amount, conc.ttl_seconds) == (
        "r:key:7:conc",
        RateKind.CONCURRENT,
        4,
        1,
        admission.CONCURRENCY_TTL_SECONDS,
    )
    assert [kind for _, kind in plan.rate_rules] == [
        RateKind.REQUESTS,
        RateKind.TOKENS,
        RateKind.CONCURRENT,
    ]


# --- admit ---------------------------------------------------------------------------------


async def test_missing_counters_are_seeded_from_the_ledger_then_admitted() -> None:
    store = MemoryCounterStore(lambda: 0)
    seeded: list[tuple[int, str]] = []

    async def seed(budget_rule: BudgetRule, window: object) -> int:
        seeded.append((budget_rule.budget_id, getattr(window, "label", "")))
        return 1_000

    plan = plan_for(policy(rule(1), rule(2, period="lifetime")))
    result = await admission.admit(store=store, plan=plan, seed=seed)

    assert result.admitted
    assert seeded == [(1, "2026-12"), (2, "lifetime")]  # December already in Berlin
    assert await store.budget_spent("b:1:2026-12") == 1_500


async def test_counters_that_never_appear_are_an_outage() -> None:
    class ForgetfulStore(MemoryCounterStore):
        async def seed_budget(self, key: str, spent_micros: int, ttl_seconds: int) -> None:
            return None

    async def seed(budget_rule: BudgetRule, window: object) -> int:
        return 0

    with pytest.raises(CounterStoreUnavailable):
        await admission.admit(
            store=ForgetfulStore(lambda: 0), plan=plan_for(policy(rule(1))), seed=seed
        )


# --- refusals ------------------------------------------------------------------------------


def exhausted(plan: admission.Plan, index: int, current: int) -> AdmissionResult:
    return AdmissionResult(Outcome.BUDGET_EXHAUSTED, index=index, current=current)


def test_budget_refusal_names_tier_limit_spent_and_local_reset_time() -> None:
    key_policy = policy(rule(1, amount_micros=100_000_000), timezone="Asia/Tokyo")
    plan = plan_for(key_policy, now=dt.datetime(2026, 11, 10, tzinfo=dt.UTC))

    error = admission.budget_refusal(
        plan=plan, result=exhausted(plan, 0, 100_250_000), policy=key_policy
    )

    assert (error.status, error.error_type) == (402, "billing_error")
    assert error.message == (
        'Budget exhausted: team "backend" monthly budget of $100.00 has $100.25 spent. '
        "It resets on 2026-12-01 00:00 Asia/Tokyo."
    )


def test_budget_refusal_below_the_limit_names_what_the_request_may_cost() -> None:
    key_policy = policy(
        rule(1, model_patterns=("claude-sonnet-*",), period="day", amount_micros=5_000_000)
    )
    plan = plan_for(key_policy, now=dt.datetime(2026, 11, 10, 12, tzinfo=dt.UTC))

    error = admission.budget_refusal(
        plan=plan, result=exhausted(plan, 0, 4_999_800), policy=key_policy
    )

    assert error.message == (
        'Budget exhausted: team "backend" daily budget for claude-sonnet-* of $5.00 has '
        "$4.9998 spent and this request may cost up to $0.0005. "
        "It resets on 2026-11-11 00:00 Europe/Berlin."
    )


def test_lifetime_budget_refusal_says_it_never_resets() -> None:
    key_policy = policy(rule(1, scope="key", owner_name="vk-ci", period="lifetime"))
    plan = plan_for(key_policy)

    error = admission.budget_refusal(
        plan=plan, result=exhausted(plan, 0, 100_000_000), policy=key_policy
    )

    assert error.message == (
        'Budget exhausted: key "vk-ci" lifetime budget of $100.00 has $100.00 spent. '
        "It is a lifetime budget and does not reset; ask an admin to raise it."
    )


def test_refusal_names_the_tier_that_refused() -> None:
    key_policy = policy(
        rule(1, scope="key", owner_name="vk-backend"),
        rule(2, scope="organization", owner_name="acme", period="quarter"),
    )
    plan = plan_for(key_policy)

    error = admission.budget_refusal(
        plan=plan, result=exhausted(plan, 1, 100_000_000), policy=key_policy
    )

    assert error.message.startswith('Budget exhausted: organization "acme" quarterly budget')
    assert error.message.endswith("It resets on 2027-01-01 00:00 Europe/Berlin.")


LIMITS = RateLimitRule(
    scope="team",
    owner_id=3,
    owner_name="backend",
    requests_per_minute=60,
    tokens_per_minute=10_000,
    concurrent=2,
)


@pytest.mark.parametrize(
    ("index", "retry_after_ms", "what", "seconds"),
    [
        (0, 14_200, "60 requests per minute", 15),
        (0, 0, "60 requests per minute", 1),
        (1, 1, "10000 tokens per minute", 1),
        (1, 59_000, "10000 tokens per minute", 59),
        (2, 599_000, "2 concurrent requests", 1),
    ],
)
def test_rate_refusal_says_what_and_when_to_retry(
    index: int, retry_after_ms: int, what: str, seconds: int
) -> None:
    plan = plan_for(policy(rates=(LIMITS,)))
    result = AdmissionResult(Outcome.RATE_LIMITED, index=index, retry_after_ms=retry_after_ms)

    error = admission.rate_refusal(plan=plan, result=result)

    assert (error.status, error.error_type) == (429, "rate_limit_error")
    assert error.message == (
        f'Rate limit reached: team "backend" allows {what}. Retry in {seconds} s.'
    )
    assert (b"retry-after", str(seconds).encode()) in error.headers
