"""The Anthropic routes other than messages: count_tokens and the model listings."""

from __future__ import annotations

import logging
import time
from typing import Any

from governance.policy import KeyPolicy, RouteTarget
from proxy import admission, subscription
from proxy.asgi import ClientGone, Incoming, Receive, Send, read_body, send_json
from proxy.auth import authenticate, authenticate_recorded
from proxy.budgeting import governed_model, now_utc, route_targets, usable_order
from proxy.counters.base import (
    CounterStoreUnavailable,
    Outcome,
    RateKind,
)
from proxy.errors import GatewayError
from proxy.forwarding import Outcome as RelayOutcome
from proxy.forwarding import forward
from proxy.hotsettings import hot
from proxy.inbound import forwardable_headers, model_refusal, parse_messages_body
from proxy.messages import messages
from proxy.providers.base import UpstreamCall
from proxy.records import as_refusal, attribute_key, attribute_request, new_event, record_refusal
from proxy.runtime import Runtime

logger = logging.getLogger("gateway.proxy")


COUNT_TOKENS_RATE_KINDS = frozenset({RateKind.REQUESTS, RateKind.CONCURRENT})


# Provider kinds whose API counts tokens (OpenAI's has no such endpoint).
COUNTING_KINDS = frozenset({"anthropic", "azure", "bedrock", "vertex", "mock"})


async def count_tokens(runtime: Runtime, request: Incoming, receive: Receive, send: Send) -> None:
    """Free upstream, so no budget: authentication, model policy and the key's request-rate and
    concurrency limits (it reaches the upstream with the gateway's credentials)."""
    started = time.perf_counter()
    event = new_event(request, "anthropic.count_tokens")
    policy: KeyPolicy | None = None
    taken = 0
    plan: admission.Plan | None = None
    try:
        try:
            policy = await authenticate(runtime, request)
            attribute_key(event, policy)
            request.body, taken = await read_body(
                receive, request, hot.max_body_bytes, runtime.inflight_bytes
            )
            parsed = parse_messages_body(request.body, need_max_tokens=False)
            attribute_request(event, request.headers, parsed)
            decision = policy.decide_model(parsed["model"])
            if not decision.allowed:
                raise model_refusal(decision.refusal)
            order = _counting_order(
                decision.model,
                usable_order(policy, decision.model, await route_targets(runtime, decision.model)),
            )
            token = subscription.subscription_token(request.headers)
            if token:
                subscription.check_allowed(policy)
                order = subscription.anthropic_only(decision.model, order)
            plan = await _admit_rates(runtime, policy, request.request_id)
        except (GatewayError, ClientGone, Exception) as failure:
            refusal = as_refusal(failure, request.request_id)
            if "session_id" not in event:
                attribute_request(event, request.headers, None)
            record_refusal(runtime, event, refusal, policy, started=started)
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
        now=now_utc(),
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


__all__ = ["count_tokens", "get_model", "list_models", "messages"]
