"""Admitting a request: the deployments it may use, their prices, the reservation on every
budget and limit before forwarding (per deployment tried), and the settlement after."""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field, replace
from typing import Any

from governance.modelnames import canonical_model
from governance.policy import KeyPolicy, RouteTarget
from governance.pricing import Price, PriceBook, Usage
from proxy import admission, subscription
from proxy.counters.base import (
    AdmissionPlan,
    BudgetCharge,
    CounterStoreUnavailable,
    Outcome,
)
from proxy.errors import GatewayError
from proxy.forwarding import failover_order
from proxy.hotsettings import hot
from proxy.inbound import model_refusal
from proxy.runtime import Runtime

logger = logging.getLogger("gateway.proxy")


MAX_DOWNGRADES = 2


def governed_model(target: RouteTarget) -> str:
    """What a deployment serves, as model policies and tier budgets see it."""
    return canonical_model(target.upstream_model)


async def route_targets(runtime: Runtime, model: str) -> tuple[RouteTarget, ...]:
    targets = (await runtime.snapshots.routing()).targets_for(model)
    if not targets:
        raise GatewayError(404, "not_found_error", f'Model "{model}" has no route on this gateway.')
    return targets


def usable_order(
    policy: KeyPolicy, model: str, targets: tuple[RouteTarget, ...]
) -> tuple[RouteTarget, ...]:
    """The route's deployments in failover order, keeping those whose served model the key's
    rules allow: a route alias cannot serve a model a rule refuses."""
    order = failover_order(targets)
    if not policy.model_rules:
        return tuple(order)
    usable = tuple(t for t in order if policy.allows_model(t.upstream_model))
    if usable:
        return usable
    served = order[0].upstream_model
    refusal = policy.refusal(served)
    if served != model:
        refusal = f'model "{model}" is served as "{served}": {refusal}'
    raise model_refusal(refusal)


@dataclass(slots=True)
class Admitted:
    model: str  # the routed public name, after tier overrides and downgrades
    order: tuple[RouteTarget, ...]  # deployments left to try, the admitted one first
    plan: admission.Plan | None  # None when admission was bypassed (fail-open outage)
    prices: PriceBook  # the book admission used: settlement needs no database
    est: admission.Estimate
    now: dt.datetime  # admission time: budget periods of the reservation
    body_size: int
    max_tokens: int
    downgraded_from: str = ""
    # Budget counters that hold this request's reservation, by counter key.
    reserved: dict[str, BudgetCharge] = field(default_factory=dict)
    # False for Claude-subscription traffic the organization keeps outside its budgets.
    budgeted: bool = True
    subscription_token: str = field(default="", repr=False)
    # The fullest enforced budget at admission and what it had used before this request
    # (proxy/spendsignals.py tells a signed-in Claude Code).
    fullest: tuple[admission.PlannedBudget, int] | None = None
    # The budget charges of each deployment tried, by deployment: settlement reuses them.
    charges: dict[tuple[str, str], tuple[BudgetCharge, ...]] = field(default_factory=dict)


def _deployment(target: RouteTarget) -> tuple[str, str]:
    return target.provider.name, target.upstream_model


def price_for_target(
    prices: PriceBook, policy: KeyPolicy, target: RouteTarget, now: dt.datetime
) -> tuple[Price | None, GatewayError | None]:
    """The price a deployment's model is reserved at, or the refusal of an unpriced model.

    A model with no price cannot be governed: by default it is refused before anything is
    forwarded; an organization may instead price it by a fallback (the ledger row is then
    marked estimated).
    """
    governed = governed_model(target)
    price = prices.price_for(target.upstream_model, now) or prices.price_for(governed, now)
    if price is not None:
        return price, None
    if policy.unpriced_models == "fallback":
        return prices.fallback_price(governed, now, policy.unpriced_fallback_model), None
    return None, GatewayError(
        403,
        "permission_error",
        f'Model "{governed}" has no price on this gateway, so its spend cannot be governed. '
        "An admin can add its price (admin: Model prices, or `manage.py load_prices`) or let "
        f'organization "{policy.organization_name}" price unpriced models by a fallback.',
    )


async def admit_request(
    runtime: Runtime,
    policy: KeyPolicy,
    model: str,
    *,
    body_size: int,
    max_tokens: int,
    request_id: str,
    subscription_token: str = "",
) -> Admitted:
    prices = await runtime.snapshots.price_book()
    downgraded_from = ""
    for _ in range(MAX_DOWNGRADES + 1):
        order = usable_order(policy, model, await route_targets(runtime, model))
        if subscription_token:
            order = subscription.anthropic_only(model, order)
        admitted = Admitted(
            model, order, None, prices, admission.Estimate(0, 0), now_utc(), body_size, max_tokens
        )
        if subscription_token:
            admitted.subscription_token = subscription_token
            admitted.budgeted = subscription.counts_against_budgets(policy)
        exhausted = await _admit_first_target(runtime, policy, admitted, request_id)
        if exhausted is None:
            admitted.downgraded_from = downgraded_from
            return admitted
        plan, result = exhausted
        rule = plan.budgets[result.index].rule
        target = rule.downgrade_model
        if rule.on_exhaust != "downgrade" or not target or target == model:
            raise admission.budget_refusal(plan=plan, result=result, policy=policy)
        if not policy.allows_model(target):
            raise admission.budget_refusal(plan=plan, result=result, policy=policy)
        downgraded_from = downgraded_from or model
        model = target
    raise GatewayError(402, "billing_error", "Every downgrade model's budget is exhausted too.")


async def _admit_first_target(
    runtime: Runtime, policy: KeyPolicy, admitted: Admitted, request_id: str
) -> tuple[admission.Plan, Any] | None:
    """Reserve for the first deployment whose budgets have room, and fill `admitted`.

    Budgets that follow the deployment (provider budgets, tiers matched on the served model)
    are checked for the deployment actually tried: when such a budget is exhausted the next
    deployment is tried. Returns None when admitted, or the plan and result of the first
    exhausted budget (for a downgrade or the refusal).
    """
    exhausted: tuple[admission.Plan, Any] | None = None
    unpriced: GatewayError | None = None
    for index, target in enumerate(admitted.order):
        price, refusal = price_for_target(admitted.prices, policy, target, admitted.now)
        if refusal is not None:
            unpriced = unpriced or refusal
            continue
        est = _estimate(admitted, price)
        plan = admission.build_plan(
            policy=policy,
            model=governed_model(target),
            provider=target.provider.name,
            est=est,
            now=admitted.now,
            reservation_id=request_id,
            budgets=admitted.budgeted,
        )
        try:
            result = await admission.admit(store=runtime.store, plan=plan, seed=runtime.seed_budget)
        except CounterStoreUnavailable:
            if not policy.fail_open:
                raise GatewayError(
                    503,
                    "api_error",
                    "The gateway cannot check budgets right now (counter store unavailable) and "
                    f'organization "{policy.organization_name}" is set to fail closed. '
                    "Retry shortly.",
                    headers=[(b"retry-after", b"5")],
                ) from None
            logger.warning("counter store unavailable; admitting (organization fails open)")
            admitted.order, admitted.est = admitted.order[index:], est
            return None
        if result.admitted:
            admitted.order, admitted.plan, admitted.est = admitted.order[index:], plan, est
            admitted.reserved = {charge.key: charge for charge in plan.counters.budgets}
            admitted.charges[_deployment(target)] = plan.counters.budgets
            if result.index >= 0:
                admitted.fullest = (plan.budgets[result.index], result.current)
            return None
        if result.outcome == Outcome.RATE_LIMITED:
            raise admission.rate_refusal(plan=plan, result=result)
        exhausted = exhausted or (plan, result)
        if not plan.budgets[result.index].rule.follows_target:
            break  # no other deployment escapes this budget
    if exhausted is not None:
        return exhausted
    assert unpriced is not None  # every deployment was skipped, and only pricing skips
    raise unpriced


def _estimate(admitted: Admitted, price: Price | None) -> admission.Estimate:
    return admission.estimate(
        body_size=admitted.body_size,
        max_tokens=admitted.max_tokens,
        price=price,
        reserve_output=hot.reserve_output_tokens,
        strict=hot.strict_budgets,
    )


def failover_admission(runtime: Runtime, policy: KeyPolicy, admitted: Admitted) -> Any:
    """Before a failover attempt: price the deployment and reserve on the budgets it adds
    (a provider budget of the new provider, a tier of its model); refuse it if one is out."""

    async def before_attempt(target: RouteTarget) -> GatewayError | None:
        price, refusal = price_for_target(admitted.prices, policy, target, admitted.now)
        if refusal is not None:
            return refusal
        if admitted.plan is None or not admitted.budgeted:  # nothing to reserve
            return None
        full = admission.build_plan(
            policy=policy,
            model=governed_model(target),
            provider=target.provider.name,
            est=_estimate(admitted, price),
            now=admitted.now,
            reservation_id=admitted.plan.counters.reservation_id,
            rate_kinds=frozenset(),
        )
        admitted.charges[_deployment(target)] = full.counters.budgets
        new = [
            (planned, charge)
            for planned, charge in zip(full.budgets, full.counters.budgets, strict=True)
            if charge.key not in admitted.reserved
        ]
        if not new:
            return None
        extra = admission.Plan(
            AdmissionPlan(
                tuple(charge for _, charge in new),
                (),
                reservation_id=full.counters.reservation_id,
                reservation_ttl_seconds=full.counters.reservation_ttl_seconds,
            ),
            tuple(planned for planned, _ in new),
            (),
        )
        try:
            result = await admission.admit(
                store=runtime.store, plan=extra, seed=runtime.seed_budget
            )
        except CounterStoreUnavailable:
            logger.warning("counter store unavailable at failover; serving without reserving")
            return None
        if result.admitted:
            admitted.reserved.update((charge.key, charge) for _, charge in new)
            return None
        return admission.budget_refusal(plan=extra, result=result, policy=policy)

    return before_attempt


def now_utc() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def request_cost(
    prices: PriceBook,
    policy: KeyPolicy,
    *,
    served: str,
    target: RouteTarget,
    usage: Usage,
    at: dt.datetime,
) -> tuple[int, bool]:
    """Micro-dollars, and whether they are an estimate: the model that answered, else the
    deployment's model, else (no price at all) the organization's fallback price."""
    for name in (served, target.upstream_model, governed_model(target)):
        cost = prices.cost_micros(name, usage, at)
        if cost is not None:
            return cost, False
    price = prices.fallback_price(
        canonical_model(served or target.upstream_model), at, policy.unpriced_fallback_model
    )
    if price is None:  # an empty price book: nothing to estimate from
        return 0, True
    return price.cost_micros(usage), True


def _charges_of(
    policy: KeyPolicy, admitted: Admitted, target: RouteTarget
) -> tuple[BudgetCharge, ...]:
    """The charges of a deployment admission did not reserve for (admission bypassed at
    failover while the counter store was down)."""
    return admission.budget_charges(
        policy=policy,
        model=governed_model(target),
        provider=target.provider.name,
        est=admitted.est,
        now=admitted.now,
    )[1]


async def settle(
    runtime: Runtime,
    policy: KeyPolicy,
    admitted: Admitted,
    target: RouteTarget,
    *,
    cost_micros: int,
    tokens: int,
) -> None:
    """Charge the budgets of the deployment that served; free the other reservations.

    When the counter store is down, the reservations and slots still held are handed to the
    runtime's pending releases, freed as soon as the store is back (the cost itself reaches
    the counters through reconciliation, which compares them with the ledger).
    """
    plan = admitted.plan
    if plan is None:
        return
    served: tuple[BudgetCharge, ...] = ()
    if admitted.budgeted:
        served = admitted.charges.get(_deployment(target)) or _charges_of(policy, admitted, target)
    if served is plan.counters.budgets and len(admitted.reserved) == len(served):
        # The common case: the deployment admitted first served and nothing else was reserved.
        steps = [(served, plan.counters.rates, cost_micros)]
    else:
        reserved = admitted.reserved
        served = tuple(reserved.get(c.key, c) for c in served)
        served_keys = {charge.key for charge in served}
        unused = tuple(c for key, c in reserved.items() if key not in served_keys)
        steps = [(served, plan.counters.rates, cost_micros), (unused, (), 0)]
    for index, (budgets, rates, cost) in enumerate(steps):
        if not budgets and not rates:
            continue
        settlement = (
            plan.counters
            if budgets is plan.counters.budgets and rates is plan.counters.rates
            else replace(plan.counters, budgets=budgets, rates=rates)
        )
        try:
            await runtime.store.settle(settlement, cost_micros=cost, tokens=tokens if rates else 0)
        except CounterStoreUnavailable:
            for later, later_rates, _ in steps[index:]:
                runtime.pending_releases.add(
                    replace(plan.counters, budgets=later, rates=later_rates)
                )
            raise
