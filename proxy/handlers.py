"""The Anthropic-compatible routes: /anthropic/v1/messages, count_tokens and models.

Every answer carries the request id made on arrival (`x-gateway-request-id` and the error
body), and every request to a governed route that is refused or reaches an upstream leaves one
ledger row under that id: the id a developer quotes finds the row. Successful count_tokens
calls and model listings cost nothing and leave no row; throttled authentication failures
leave none either, so a flood of bad keys cannot fill the ledger.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import orjson
from django.conf import settings

from governance.keyhash import SECRET_PREFIX, hash_secret
from governance.modelnames import canonical_model
from governance.policy import KeyPolicy, RouteTarget
from governance.pricing import Price, PriceBook, Usage
from proxy import admission, subscription
from proxy.asgi import ClientGone, Incoming, Receive, Send, read_body, send_json
from proxy.attribution import attribute
from proxy.counters.base import (
    AdmissionPlan,
    BudgetCharge,
    CounterStoreUnavailable,
    Outcome,
    RateKind,
)
from proxy.errors import GatewayError
from proxy.forwarding import ClientShape, failover_order, forward, run_until_disconnect
from proxy.forwarding import Outcome as RelayOutcome
from proxy.providers.base import (
    DROPPED_REQUEST_HEADERS,
    DROPPED_REQUEST_PREFIXES,
    UpstreamCall,
)
from proxy.runtime import Runtime
from telemetry import observe

logger = logging.getLogger("gateway.proxy")
MAX_DOWNGRADES = 2
MAX_MODEL_NAME_LENGTH = 200
COUNT_TOKENS_RATE_KINDS = frozenset({RateKind.REQUESTS, RateKind.CONCURRENT})


def new_request_id() -> str:
    """32 hex digits like a uuid4: 48 bits of Unix milliseconds, then 80 random bits.

    Time first, so new ids land at the right edge of the ledger's unique index instead of on
    a random page of it: on a ten-million-row ledger random ids made every insert read a cold
    index page. `random` rather than uuid4 saves a getrandom() syscall per request; an id
    must be unique, not unguessable, and `random` is reseeded in every forked worker.
    """
    return f"gwreq_{time.time_ns() // 1_000_000:012x}{random.getrandbits(80):020x}"


def presented_secret(headers: dict[str, str]) -> str:
    """The virtual key from `x-api-key` or `Authorization: Bearer`.

    When both are present and differ, x-api-key wins, unless only the Bearer value looks like
    a gateway key (Claude Code sends both when ANTHROPIC_API_KEY and ANTHROPIC_AUTH_TOKEN are
    both set, and the API key may be a stale provider key).
    """
    gateway_key = headers.get(subscription.GATEWAY_KEY_HEADER, "").strip()
    if gateway_key:  # a Claude-subscription client names its virtual key here
        return gateway_key
    api_key = headers.get("x-api-key", "").strip()
    authorization = headers.get("authorization", "")
    bearer = authorization[7:].strip() if authorization[:7].lower() == "bearer " else ""
    if bearer.startswith(subscription.OAUTH_TOKEN_PREFIX):
        bearer = ""  # a Claude subscription's token is never a virtual key
    bearer_is_ours = bearer.startswith(SECRET_PREFIX) and not api_key.startswith(SECRET_PREFIX)
    if api_key and bearer and api_key != bearer and bearer_is_ours:
        return bearer
    return api_key or bearer


async def authenticate(runtime: Runtime, request: Incoming) -> KeyPolicy:
    """The key's policy, from the headers alone: nothing of the body is read before this."""
    secret = presented_secret(request.headers)
    if not secret and subscription.subscription_token(request.headers):
        raise subscription.missing_gateway_key()
    if not secret:
        raise GatewayError(
            401,
            "authentication_error",
            "No virtual key: send it in x-api-key or Authorization: Bearer.",
        )
    lookup_hash = hash_secret(secret)
    guard = runtime.auth_guard
    address = request.client_address
    if runtime.snapshots.cached_key(lookup_hash) is None and guard.blocked(address, lookup_hash):
        raise GatewayError(
            429,
            "rate_limit_error",
            "Too many failed authentications from this address or with this key; "
            "retry in a minute.",
            headers=[(b"retry-after", b"60")],
            recorded=False,
        )
    try:
        policy = await runtime.snapshots.key_policy(lookup_hash)
    except Exception as exc:
        # A key not yet cached needs the database; while it is unreachable the gateway cannot
        # tell a good key from a revoked one, so it refuses (Claude Code retries a 503).
        logger.warning("could not load a key's policy: %s", type(exc).__name__)
        raise GatewayError(
            503,
            "api_error",
            "The gateway cannot check this key right now (its database is unreachable). "
            "Retry shortly.",
            headers=[(b"retry-after", b"5")],
        ) from exc
    if policy is None:
        guard.record_failure(address, lookup_hash)
        raise GatewayError(401, "authentication_error", "Invalid virtual key (unknown or revoked).")
    if policy.is_expired(dt.datetime.now(dt.UTC)):
        guard.record_failure(address, lookup_hash)
        raise GatewayError(
            401, "authentication_error", f'Virtual key "{policy.key_name}" has expired.'
        )
    return policy


def parse_messages_body(body: bytes, *, need_max_tokens: bool) -> dict[str, Any]:
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise GatewayError(
            400, "invalid_request_error", f"Request body is not valid JSON: {exc}"
        ) from exc
    if not isinstance(parsed, dict):
        raise GatewayError(400, "invalid_request_error", "Request body must be a JSON object.")
    return check_messages_request(parsed, need_max_tokens=need_max_tokens)


def check_messages_request(parsed: dict[str, Any], *, need_max_tokens: bool) -> dict[str, Any]:
    """The fields the gateway relies on, checked at the edge: a model name that could not be
    stored in the ledger (too long, control characters) is refused here, not downstream."""
    model = parsed.get("model")
    if not isinstance(model, str) or not model:
        raise GatewayError(400, "invalid_request_error", "model: Field required (a model name).")
    if len(model) > MAX_MODEL_NAME_LENGTH or not model.isprintable():
        raise GatewayError(
            400,
            "invalid_request_error",
            f"model: must be a name of at most {MAX_MODEL_NAME_LENGTH} printable characters.",
        )
    if not isinstance(parsed.get("messages"), list):
        raise GatewayError(400, "invalid_request_error", "messages: Field required (a list).")
    max_tokens = parsed.get("max_tokens")
    if need_max_tokens and (
        not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1
    ):
        raise GatewayError(
            400, "invalid_request_error", "max_tokens: Field required (an integer >= 1)."
        )
    return parsed


def forwardable_headers(headers: dict[str, str]) -> dict[str, str]:
    return {
        k: v
        for k, v in headers.items()
        if k not in DROPPED_REQUEST_HEADERS and not k.startswith(DROPPED_REQUEST_PREFIXES)
    }


def _model_refusal(refusal: str) -> GatewayError:
    return GatewayError(403, "permission_error", refusal[0].upper() + refusal[1:] + ".")


def governed_model(target: RouteTarget) -> str:
    """What a deployment serves, as model policies and tier budgets see it."""
    return canonical_model(target.upstream_model)


async def _routes(runtime: Runtime, model: str) -> tuple[RouteTarget, ...]:
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
    usable = tuple(t for t in order if policy.allows_model(t.upstream_model))
    if usable:
        return usable
    served = order[0].upstream_model
    refusal = policy.refusal(served)
    if served != model:
        refusal = f'model "{model}" is served as "{served}": {refusal}'
    raise _model_refusal(refusal)


# --- the ledger row ---------------------------------------------------------------------------


def _new_event(request: Incoming, route: str) -> dict[str, Any]:
    return {
        "request_id": request.request_id,
        "created_at": dt.datetime.now(dt.UTC),
        "route": route,
        "stream": False,
    }


def _attribute_key(event: dict[str, Any], policy: KeyPolicy) -> None:
    event.update(
        organization_id=policy.organization_id,
        team_id=policy.team_id,
        project_id=policy.project_id,
        key_id=policy.key_id,
        parent_key_id=policy.parent_id,
        key_name=policy.key_name,
    )


def _attribute_request(
    event: dict[str, Any], headers: dict[str, str], parsed: dict[str, Any] | None
) -> None:
    attribution = attribute(headers, parsed.get("metadata") if parsed else None)
    event.update(
        session_id=attribution.session_id,
        agent_id=attribution.agent_id,
        parent_agent_id=attribution.parent_agent_id,
        client_name=attribution.client_name,
        client_version=attribution.client_version,
        # For the OpenTelemetry span only; the ledger writer keeps just its own columns.
        traceparent=attribution.traceparent,
    )
    if parsed is not None:
        event["requested_model"] = parsed["model"]
        event["stream"] = parsed.get("stream") is True


def _as_refusal(failure: BaseException, request_id: str) -> GatewayError | ClientGone:
    """A failure before forwarding, as the refusal the client gets and the ledger records.

    Anything but the gateway's own refusals (a routing table or price book that cannot be
    loaded while the database is down, a bug) becomes a 503 the client may retry.
    """
    if isinstance(failure, GatewayError | ClientGone):
        return failure
    logger.error("request %s failed before forwarding", request_id, exc_info=failure)
    return GatewayError(
        503,
        "api_error",
        "The gateway could not prepare this request (a dependency is unavailable). Retry shortly.",
        headers=[(b"retry-after", b"5")],
    )


def _record_refusal(
    runtime: Runtime,
    event: dict[str, Any],
    refusal: GatewayError | ClientGone,
    policy: KeyPolicy | None,
    *,
    started: float,
) -> None:
    """The ledger row (and metrics) of a request the gateway answered itself."""
    if isinstance(refusal, ClientGone):
        event.update(status=499, error_type="", client_disconnected=True)
    else:
        if not refusal.recorded:
            return
        event.update(
            status=refusal.status, error_type=refusal.error_type, error_message=refusal.message
        )
    event["latency_ms"] = int((time.perf_counter() - started) * 1000)
    runtime.usage.put(event)
    if policy is not None:
        observe.request_finished(event, policy, started=started)


# --- admission ------------------------------------------------------------------------------


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
        order = usable_order(policy, model, await _routes(runtime, model))
        if subscription_token:
            order = subscription.anthropic_only(model, order)
        admitted = Admitted(
            model, order, None, prices, admission.Estimate(0, 0), _now_utc(), body_size, max_tokens
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
        reserve_output=settings.GATEWAY_RESERVE_OUTPUT_TOKENS,
        strict=settings.GATEWAY_STRICT_BUDGETS,
    )


def _failover_admission(runtime: Runtime, policy: KeyPolicy, admitted: Admitted) -> Any:
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


def _now_utc() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


# --- POST /v1/messages ------------------------------------------------------------------------


async def _watch_disconnect(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


@dataclass(frozen=True, slots=True)
class Prepared:
    """A route's request as the Anthropic Messages request the gateway governs and forwards."""

    parsed: dict[str, Any]
    body: bytes  # what is forwarded: the client's own bytes when it spoke Anthropic
    shape: ClientShape | None = None  # how the answer is converted for the client


Prepare = Callable[[bytes], Prepared]


def prepare_anthropic(body: bytes) -> Prepared:
    return Prepared(parse_messages_body(body, need_max_tokens=True), body)


async def messages(runtime: Runtime, request: Incoming, receive: Receive, send: Send) -> None:
    await serve_messages(
        runtime, request, receive, send, route="anthropic.messages", prepare=prepare_anthropic
    )


async def serve_messages(
    runtime: Runtime,
    request: Incoming,
    receive: Receive,
    send: Send,
    *,
    route: str,
    prepare: Prepare,
) -> None:
    """Authenticate, read, govern, forward and meter one Messages call, whatever API the client
    speaks (`prepare` turns its body into an Anthropic request)."""
    started = time.perf_counter()
    event = _new_event(request, route)
    policy: KeyPolicy | None = None
    taken = 0
    try:
        try:
            policy = await authenticate(runtime, request)
            _attribute_key(event, policy)
            token = subscription.subscription_token(request.headers)
            if token:
                event["billing"] = "subscription"
                subscription.check_allowed(policy)
            request.body, taken = await read_body(
                receive, request, settings.GATEWAY_MAX_BODY_BYTES, runtime.inflight_bytes
            )
            prepared = prepare(request.body)
            parsed = prepared.parsed
            _attribute_request(event, request.headers, parsed)
            decision = policy.decide_model(parsed["model"])
            if not decision.allowed:
                raise _model_refusal(decision.refusal)
            admitted = await admit_request(
                runtime,
                policy,
                decision.model,
                body_size=len(request.body),
                max_tokens=int(parsed["max_tokens"]),
                request_id=request.request_id,
                subscription_token=token,
            )
        except (GatewayError, ClientGone, Exception) as failure:
            refusal = _as_refusal(failure, request.request_id)
            if "session_id" not in event:
                _attribute_request(event, request.headers, None)
            _record_refusal(runtime, event, refusal, policy, started=started)
            if refusal is failure:
                raise
            raise refusal from failure
        await _forward_messages(
            runtime,
            request,
            receive,
            send,
            event=event,
            policy=policy,
            prepared=prepared,
            admitted=admitted,
            started=started,
        )
    finally:
        runtime.inflight_bytes.give_back(taken)


async def _forward_messages(
    runtime: Runtime,
    request: Incoming,
    receive: Receive,
    send: Send,
    *,
    event: dict[str, Any],
    policy: KeyPolicy,
    prepared: Prepared,
    admitted: Admitted,
    started: float,
) -> None:
    forwarded_at = time.perf_counter()
    call = UpstreamCall(
        path="/v1/messages",
        query=request.query if prepared.shape is None else "",
        body=prepared.body,
        parsed=prepared.parsed,
        headers=forwardable_headers(request.headers),
        stream=event["stream"],
        subscription_token=admitted.subscription_token,
    )
    outcome = RelayOutcome()
    # Deployments cooling down go last (all of them: still tried); one request probes each.
    health = await runtime.health.plan(admitted.order)
    work = asyncio.ensure_future(
        forward(
            providers=runtime.providers,
            order=health.targets,
            call=call,
            send=send,
            request_id=request.request_id,
            extra_headers=[(b"x-gateway-request-id", request.request_id.encode())],
            outcome=outcome,
            before_attempt=_failover_admission(runtime, policy, admitted),
            shape=prepared.shape,
            observer=health,
            limits=runtime.failover_limits,
        )
    )
    disconnected = False
    try:
        disconnected = await run_until_disconnect(
            work, asyncio.ensure_future(_watch_disconnect(receive))
        )
    except GatewayError as failure:
        outcome.status, outcome.error_type = failure.status, failure.error_type
        outcome.error_message = outcome.error_message or failure.message
        raise
    except Exception as exc:
        outcome.status, outcome.error_type = 500, "api_error"
        outcome.error_message = f"gateway error: {type(exc).__name__}"
        raise
    except asyncio.CancelledError:
        # The server is shutting down and its drain time is over: the answer is cut short.
        outcome.error_type = outcome.error_type or "api_error"
        outcome.error_message = "cut short: the gateway shut down before the answer ended"
        raise
    finally:
        await _finish(
            runtime, event, policy, admitted, outcome, started=started, disconnected=disconnected
        )
        observe.request_finished(
            event, policy, started=started, forwarded_at=forwarded_at, targets=admitted.order
        )


# Providers whose answers may come without usage (OpenAI-compatible servers that never send
# the usage chunk, or a stream cut before it).
USAGE_OPTIONAL_KINDS = frozenset({"openai", "openai-compatible"})
CHARS_PER_TOKEN_ESTIMATE = 4


def _usage_unreported(outcome: RelayOutcome, target: RouteTarget, usage: Usage) -> bool:
    return (
        outcome.reached_upstream
        and outcome.status == 200
        and target.provider.kind in USAGE_OPTIONAL_KINDS
        and usage.prompt_tokens == 0
        and usage.output_tokens == 0
    )


def attempt_log(outcome: RelayOutcome) -> str:
    """The attempts as JSON for the ledger, when there is more to tell than the row says."""
    attempts = outcome.attempt_log
    if not attempts or (len(attempts) == 1 and attempts[0].status == 200):
        return ""
    return orjson.dumps([attempt.as_dict() for attempt in attempts]).decode()


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


async def _finish(
    runtime: Runtime,
    event: dict[str, Any],
    policy: KeyPolicy,
    admitted: Admitted,
    outcome: RelayOutcome,
    *,
    started: float,
    disconnected: bool,
) -> None:
    """Meter, hand the usage event to the ledger writer, then settle the reservation.

    Nothing here may lose the ledger row: the event is enqueued whatever fails, before the
    settlement (which talks to the counter store and may be slow or fail).
    """
    target = outcome.target or admitted.order[0]
    cost = tokens = 0
    try:
        usage = outcome.tally.usage()
        unreported = _usage_unreported(outcome, target, usage)
        if unreported:
            # An OpenAI-compatible stream cut before its usage chunk: the provider bills the
            # prompt all the same, so it is estimated from the body rather than recorded as 0.
            usage = Usage(input_tokens=admitted.body_size // CHARS_PER_TOKEN_ESTIMATE)
        tokens = usage.prompt_tokens + usage.output_tokens
        served = outcome.tally.model or outcome.upstream_model or target.upstream_model
        cost, estimated = request_cost(
            admitted.prices, policy, served=served, target=target, usage=usage, at=admitted.now
        )
        estimated = estimated or unreported
        if admitted.subscription_token:
            # List price for showback; spend only if the organization budgets it.
            event["list_cost_micros"] = cost
            cost = cost if admitted.budgeted else 0
        if estimated and tokens:
            logger.warning(
                "model %s has no price; request %s recorded at an estimated cost",
                served,
                event["request_id"],
            )
        event.update(
            routed_model=governed_model(target),
            served_model=served,
            provider=outcome.provider,
            status=outcome.status or (499 if disconnected else 502),
            error_type=outcome.error_type or outcome.tally.error_type,
            error_message=outcome.error_message or outcome.tally.error_message,
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cache_read_tokens=usage.cache_read_tokens,
            cache_write_5m_tokens=usage.cache_write_5m_tokens,
            cache_write_1h_tokens=usage.cache_write_1h_tokens,
            cost_micros=cost,
            cost_estimated=estimated,
            latency_ms=int((time.perf_counter() - started) * 1000),
            ttfb_ms=(
                int((outcome.first_byte_at - started) * 1000)
                if outcome.first_byte_at is not None
                else None
            ),
            attempts=outcome.attempts,
            attempt_log=attempt_log(outcome),
            downgraded_from=admitted.downgraded_from,
            client_disconnected=disconnected,
            upstream_request_id=outcome.upstream_request_id[:100],
        )
    except Exception:
        logger.exception("metering request %s failed", event["request_id"])
        event.setdefault("status", outcome.status or 500)
    finally:
        runtime.usage.put(event)
    try:
        await _settle(runtime, policy, admitted, target, cost_micros=cost, tokens=tokens)
    except CounterStoreUnavailable:
        logger.warning(
            "could not settle request %s; reconciliation will correct counters",
            event["request_id"],
        )
    except Exception:
        logger.exception("settling request %s failed", event["request_id"])


async def _settle(
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
    _, served = (
        admission.budget_charges(
            policy=policy,
            model=governed_model(target),
            provider=target.provider.name,
            est=admitted.est,
            now=admitted.now,
        )
        if admitted.budgeted
        else ((), ())
    )
    served_keys = {charge.key for charge in served}
    unused = tuple(c for key, c in admitted.reserved.items() if key not in served_keys)
    steps = [
        (tuple(admitted.reserved.get(c.key, c) for c in served), plan.counters.rates, cost_micros),
        (unused, (), 0),
    ]
    for index, (budgets, rates, cost) in enumerate(steps):
        if not budgets and not rates:
            continue
        settlement = replace(plan.counters, budgets=budgets, rates=rates)
        try:
            await runtime.store.settle(settlement, cost_micros=cost, tokens=tokens if rates else 0)
        except CounterStoreUnavailable:
            for later, later_rates, _ in steps[index:]:
                runtime.pending_releases.add(
                    replace(plan.counters, budgets=later, rates=later_rates)
                )
            raise


# --- count_tokens and models ------------------------------------------------------------------


async def count_tokens(runtime: Runtime, request: Incoming, receive: Receive, send: Send) -> None:
    """Free upstream, so no budget: authentication, model policy and the key's request-rate and
    concurrency limits (it reaches the upstream with the gateway's credentials)."""
    started = time.perf_counter()
    event = _new_event(request, "anthropic.count_tokens")
    policy: KeyPolicy | None = None
    taken = 0
    plan: admission.Plan | None = None
    try:
        try:
            policy = await authenticate(runtime, request)
            _attribute_key(event, policy)
            request.body, taken = await read_body(
                receive, request, settings.GATEWAY_MAX_BODY_BYTES, runtime.inflight_bytes
            )
            parsed = parse_messages_body(request.body, need_max_tokens=False)
            _attribute_request(event, request.headers, parsed)
            decision = policy.decide_model(parsed["model"])
            if not decision.allowed:
                raise _model_refusal(decision.refusal)
            order = _counting_order(
                decision.model,
                usable_order(policy, decision.model, await _routes(runtime, decision.model)),
            )
            token = subscription.subscription_token(request.headers)
            if token:
                subscription.check_allowed(policy)
                order = subscription.anthropic_only(decision.model, order)
            plan = await _admit_rates(runtime, policy, request.request_id)
        except (GatewayError, ClientGone, Exception) as failure:
            refusal = _as_refusal(failure, request.request_id)
            if "session_id" not in event:
                _attribute_request(event, request.headers, None)
            _record_refusal(runtime, event, refusal, policy, started=started)
            if refusal is failure:
                raise
            raise refusal from failure
        await _forward_count_tokens(
            runtime,
            request,
            send,
            event=event,
            policy=policy,
            parsed=parsed,
            order=order,
            started=started,
        )
    finally:
        runtime.inflight_bytes.give_back(taken)
        if plan is not None:
            try:
                await runtime.store.settle(plan.counters, cost_micros=0, tokens=0)
            except CounterStoreUnavailable:
                runtime.pending_releases.add(plan.counters)
            except Exception:
                logger.exception("could not release a count_tokens slot; it expires on its own")


# Provider kinds whose API counts tokens (OpenAI's has no such endpoint).
COUNTING_KINDS = frozenset({"anthropic", "azure", "bedrock", "vertex", "mock"})


def _counting_order(model: str, order: tuple[RouteTarget, ...]) -> tuple[RouteTarget, ...]:
    counting = tuple(t for t in order if t.provider.kind in COUNTING_KINDS)
    if not counting:
        kinds = ", ".join(sorted({t.provider.kind for t in order}))
        raise GatewayError(
            404,
            "not_found_error",
            f'count_tokens is not available for model "{model}": its providers ({kinds}) '
            "cannot count tokens.",
        )
    return counting


async def _admit_rates(
    runtime: Runtime, policy: KeyPolicy, request_id: str
) -> admission.Plan | None:
    plan = admission.build_plan(
        policy=policy,
        model="",
        provider="",
        est=admission.Estimate(0, 0),
        now=_now_utc(),
        reservation_id=request_id,
        budgets=False,
        rate_kinds=COUNT_TOKENS_RATE_KINDS,
    )
    if not plan.counters.rates:
        return None
    try:
        result = await admission.admit(store=runtime.store, plan=plan, seed=runtime.seed_budget)
    except CounterStoreUnavailable:
        if policy.fail_open:
            return None
        raise GatewayError(
            503,
            "api_error",
            "The gateway cannot check rate limits right now (counter store unavailable).",
            headers=[(b"retry-after", b"5")],
        ) from None
    if result.outcome == Outcome.RATE_LIMITED:
        raise admission.rate_refusal(plan=plan, result=result)
    return plan


async def _forward_count_tokens(
    runtime: Runtime,
    request: Incoming,
    send: Send,
    *,
    event: dict[str, Any],
    policy: KeyPolicy,
    parsed: dict[str, Any],
    order: tuple[RouteTarget, ...],
    started: float,
) -> None:
    call = UpstreamCall(
        path="/v1/messages/count_tokens",
        query=request.query,
        body=request.body,
        parsed=parsed,
        headers=forwardable_headers(request.headers),
        stream=False,
        subscription_token=subscription.subscription_token(request.headers),
    )
    outcome = RelayOutcome()
    try:
        await forward(
            providers=runtime.providers,
            order=order,
            call=call,
            send=send,
            request_id=request.request_id,
            extra_headers=[(b"x-gateway-request-id", request.request_id.encode())],
            outcome=outcome,
        )
    except GatewayError as failure:
        outcome.status, outcome.error_type = failure.status, failure.error_type
        outcome.error_message = outcome.error_message or failure.message
        raise
    finally:
        if outcome.status != 200:  # an error the client saw: it has a row to be found by
            event.update(
                provider=outcome.provider,
                routed_model=governed_model(outcome.target or order[0]),
                status=outcome.status or 502,
                error_type=outcome.error_type,
                error_message=outcome.error_message,
                attempts=outcome.attempts,
                latency_ms=int((time.perf_counter() - started) * 1000),
            )
            runtime.usage.put(event)


def _model_info(name: str) -> dict[str, Any]:
    return {"type": "model", "id": name, "display_name": name, "created_at": "2025-01-01T00:00:00Z"}


async def authenticate_recorded(runtime: Runtime, request: Incoming, route: str) -> KeyPolicy:
    """authenticate(), with a ledger row when it refuses."""
    started = time.perf_counter()
    try:
        return await authenticate(runtime, request)
    except GatewayError as refusal:
        event = _new_event(request, route)
        _attribute_request(event, request.headers, None)
        _record_refusal(runtime, event, refusal, None, started=started)
        raise


def servable(policy: KeyPolicy, targets: tuple[RouteTarget, ...], name: str) -> bool:
    return policy.allows_model(name) and any(policy.allows_model(t.upstream_model) for t in targets)


async def list_models(runtime: Runtime, request: Incoming, receive: Receive, send: Send) -> None:
    """The routed models this key may use, in the Anthropic list shape."""
    policy = await authenticate_recorded(runtime, request, "anthropic.models")
    routing = await runtime.snapshots.routing()
    names = [n for n in routing.public_names() if servable(policy, routing.targets_for(n), n)]
    data = [_model_info(n) for n in names]
    await send_json(
        send,
        200,
        {
            "data": data,
            "has_more": False,
            "first_id": names[0] if names else None,
            "last_id": names[-1] if names else None,
        },
        headers=[(b"x-gateway-request-id", request.request_id.encode())],
    )


async def get_model(runtime: Runtime, request: Incoming, receive: Receive, send: Send) -> None:
    policy = await authenticate_recorded(runtime, request, "anthropic.models")
    name = request.path.rsplit("/", 1)[-1]
    routing = await runtime.snapshots.routing()
    targets = routing.targets_for(name)
    if not targets or not servable(policy, targets, name):
        raise GatewayError(404, "not_found_error", f'Model "{name}" is not available to this key.')
    await send_json(
        send,
        200,
        _model_info(name),
        headers=[(b"x-gateway-request-id", request.request_id.encode())],
    )


__all__ = ["count_tokens", "get_model", "list_models", "messages", "new_request_id"]
