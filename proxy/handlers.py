"""The Anthropic-compatible routes: /anthropic/v1/messages, count_tokens and models."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import random
import time
from dataclasses import dataclass
from typing import Any

import orjson
from django.conf import settings

from governance.keyhash import SECRET_PREFIX, hash_secret
from governance.policy import KeyPolicy, RouteTarget
from proxy import admission
from proxy.asgi import Incoming, Receive, Send, send_json
from proxy.attribution import attribute
from proxy.counters.base import AdmissionPlan, CounterStoreUnavailable, Outcome
from proxy.errors import GatewayError
from proxy.forwarding import Outcome as RelayOutcome
from proxy.forwarding import forward, run_until_disconnect
from proxy.providers.base import DROPPED_REQUEST_HEADERS, UpstreamCall
from proxy.runtime import Runtime
from telemetry import observe

logger = logging.getLogger("gateway.proxy")
MAX_DOWNGRADES = 2


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
    api_key = headers.get("x-api-key", "").strip()
    authorization = headers.get("authorization", "")
    bearer = authorization[7:].strip() if authorization[:7].lower() == "bearer " else ""
    bearer_is_ours = bearer.startswith(SECRET_PREFIX) and not api_key.startswith(SECRET_PREFIX)
    if api_key and bearer and api_key != bearer and bearer_is_ours:
        return bearer
    return api_key or bearer


async def authenticate(runtime: Runtime, request: Incoming) -> KeyPolicy:
    secret = presented_secret(request.headers)
    if not secret:
        raise GatewayError(
            401,
            "authentication_error",
            "No virtual key: send it in x-api-key or Authorization: Bearer.",
        )
    lookup_hash = hash_secret(secret)
    guard = runtime.auth_guard
    address = request.client_address
    if guard.blocked(address) and runtime.snapshots.cached_key(lookup_hash) is None:
        raise GatewayError(
            429,
            "rate_limit_error",
            "Too many failed authentications from this address; retry in a minute.",
            headers=[(b"retry-after", b"60")],
        )
    policy = await runtime.snapshots.key_policy(lookup_hash)
    if policy is None:
        guard.record_failure(address)
        raise GatewayError(401, "authentication_error", "Invalid virtual key (unknown or revoked).")
    if policy.is_expired(dt.datetime.now(dt.UTC)):
        guard.record_failure(address)
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
    if not isinstance(parsed.get("model"), str) or not parsed["model"]:
        raise GatewayError(400, "invalid_request_error", "model: Field required (a model name).")
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
    return {k: v for k, v in headers.items() if k not in DROPPED_REQUEST_HEADERS}


async def _routes(runtime: Runtime, model: str) -> tuple[RouteTarget, ...]:
    targets = (await runtime.snapshots.routing()).targets_for(model)
    if not targets:
        raise GatewayError(404, "not_found_error", f'Model "{model}" has no route on this gateway.')
    return targets


@dataclass(slots=True)
class Admitted:
    model: str
    targets: tuple[RouteTarget, ...]
    plan: admission.Plan | None  # None when admission was bypassed (fail-open outage)
    downgraded_from: str = ""


async def admit_request(
    runtime: Runtime, policy: KeyPolicy, model: str, *, body_size: int, max_tokens: int
) -> Admitted:
    prices = await runtime.snapshots.price_book()
    downgraded_from = ""
    for _ in range(MAX_DOWNGRADES + 1):
        targets = await _routes(runtime, model)
        now = dt.datetime.now(dt.UTC)
        est = admission.estimate(
            body_size=body_size,
            max_tokens=max_tokens,
            price=prices.price_for(model, now),
            reserve_output=settings.GATEWAY_RESERVE_OUTPUT_TOKENS,
            strict=settings.GATEWAY_STRICT_BUDGETS,
        )
        plan = admission.build_plan(
            policy=policy, model=model, provider=targets[0].provider.name, est=est, now=now
        )
        try:
            result = await admission.admit(store=runtime.store, plan=plan, seed=runtime.seed_budget)
        except CounterStoreUnavailable:
            if policy.fail_open:
                logger.warning("counter store unavailable; admitting (organization fails open)")
                return Admitted(model, targets, None, downgraded_from)
            raise GatewayError(
                503,
                "api_error",
                "The gateway cannot check budgets right now (counter store unavailable) and "
                f'organization "{policy.organization_name}" is set to fail closed. Retry shortly.',
            ) from None
        if result.admitted:
            return Admitted(model, targets, plan, downgraded_from)
        if result.outcome == Outcome.RATE_LIMITED:
            raise admission.rate_refusal(plan=plan, result=result)
        rule = plan.budgets[result.index].rule
        target = rule.downgrade_model
        if rule.on_exhaust != "downgrade" or not target or target == model:
            raise admission.budget_refusal(plan=plan, result=result, policy=policy)
        if not policy.allows_model(target):
            raise admission.budget_refusal(plan=plan, result=result, policy=policy)
        downgraded_from = downgraded_from or model
        model = target
    raise GatewayError(402, "billing_error", "Every downgrade model's budget is exhausted too.")


def _now_utc() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


async def _watch_disconnect(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


async def messages(runtime: Runtime, request: Incoming, receive: Receive, send: Send) -> None:
    started = time.perf_counter()
    created_at = _now_utc()
    request_id = new_request_id()
    policy = await authenticate(runtime, request)
    parsed = parse_messages_body(request.body, need_max_tokens=True)
    requested = parsed["model"]
    attribution = attribute(request.headers, parsed.get("metadata"))
    event: dict[str, Any] = {
        "request_id": request_id,
        "created_at": created_at,
        "organization_id": policy.organization_id,
        "team_id": policy.team_id,
        "project_id": policy.project_id,
        "key_id": policy.key_id,
        "parent_key_id": policy.parent_id,
        "key_name": policy.key_name,
        "route": "anthropic.messages",
        "requested_model": requested,
        "stream": parsed.get("stream") is True,
        "session_id": attribution.session_id,
        "agent_id": attribution.agent_id,
        "parent_agent_id": attribution.parent_agent_id,
        "client_name": attribution.client_name,
        "client_version": attribution.client_version,
        # For the OpenTelemetry span only; the ledger writer keeps just its own columns.
        "traceparent": attribution.traceparent,
    }
    try:
        decision = policy.decide_model(requested)
        if not decision.allowed:
            raise GatewayError(
                403, "permission_error", decision.refusal[0].upper() + decision.refusal[1:] + "."
            )
        admitted = await admit_request(
            runtime,
            policy,
            decision.model,
            body_size=len(request.body),
            max_tokens=int(parsed["max_tokens"]),
        )
    except GatewayError as refusal:
        event.update(
            status=refusal.status,
            error_type=refusal.error_type,
            latency_ms=int((time.perf_counter() - started) * 1000),
        )
        runtime.usage.put(event)
        observe.request_finished(event, policy, started=started)
        raise
    forwarded_at = time.perf_counter()
    call = UpstreamCall(
        path="/v1/messages",
        query=request.query,
        body=request.body,
        parsed=parsed,
        headers=forwardable_headers(request.headers),
        stream=event["stream"],
    )
    outcome = RelayOutcome()
    work = asyncio.ensure_future(
        forward(
            providers=runtime.providers,
            targets=admitted.targets,
            call=call,
            send=send,
            request_id=request_id,
            extra_headers=[(b"x-gateway-request-id", request_id.encode())],
            outcome=outcome,
        )
    )
    disconnected = False
    try:
        disconnected = await run_until_disconnect(
            work, asyncio.ensure_future(_watch_disconnect(receive))
        )
    except GatewayError as failure:
        outcome.status, outcome.error_type = failure.status, failure.error_type
        raise
    finally:
        await _finish(runtime, event, admitted, outcome, started=started, disconnected=disconnected)
        observe.request_finished(
            event, policy, started=started, forwarded_at=forwarded_at, targets=admitted.targets
        )


async def _finish(
    runtime: Runtime,
    event: dict[str, Any],
    admitted: Admitted,
    outcome: RelayOutcome,
    *,
    started: float,
    disconnected: bool,
) -> None:
    """Meter, settle the reservation and hand the usage event to the writer."""
    tally = outcome.tally
    usage = tally.usage()
    served = tally.model or outcome.upstream_model or admitted.model
    prices = await runtime.snapshots.price_book()
    cost = prices.cost_micros(served, usage, event["created_at"])
    if cost is None:
        cost = prices.cost_micros(admitted.model, usage, event["created_at"]) or 0
        if usage.prompt_tokens or usage.output_tokens:
            logger.warning(
                "no price for model %s; request %s recorded at $0", served, event["request_id"]
            )
    if admitted.plan is not None:
        try:
            await runtime.store.settle(
                admitted.plan.counters,
                cost_micros=cost,
                tokens=usage.prompt_tokens + usage.output_tokens,
            )
        except CounterStoreUnavailable:
            logger.warning(
                "could not settle request %s; reconciliation will correct counters",
                event["request_id"],
            )
    status = outcome.status or (499 if disconnected else 502)
    event.update(
        routed_model=admitted.model,
        served_model=served,
        provider=outcome.provider,
        status=status,
        error_type=outcome.error_type or tally.error_type,
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        cache_read_tokens=usage.cache_read_tokens,
        cache_write_5m_tokens=usage.cache_write_5m_tokens,
        cache_write_1h_tokens=usage.cache_write_1h_tokens,
        cost_micros=cost,
        latency_ms=int((time.perf_counter() - started) * 1000),
        ttfb_ms=(
            int((outcome.first_byte_at - started) * 1000)
            if outcome.first_byte_at is not None
            else None
        ),
        attempts=outcome.attempts,
        downgraded_from=admitted.downgraded_from,
        client_disconnected=disconnected,
        upstream_request_id=outcome.upstream_request_id[:100],
    )
    runtime.usage.put(event)


async def count_tokens(runtime: Runtime, request: Incoming, receive: Receive, send: Send) -> None:
    """Free upstream, so no budget or ledger: authentication and model policy only."""
    policy = await authenticate(runtime, request)
    parsed = parse_messages_body(request.body, need_max_tokens=False)
    decision = policy.decide_model(parsed["model"])
    if not decision.allowed:
        raise GatewayError(
            403, "permission_error", decision.refusal[0].upper() + decision.refusal[1:] + "."
        )
    targets = await _routes(runtime, decision.model)
    call = UpstreamCall(
        path="/v1/messages/count_tokens",
        query=request.query,
        body=request.body,
        parsed=parsed,
        headers=forwardable_headers(request.headers),
        stream=False,
    )
    request_id = new_request_id()
    await forward(
        providers=runtime.providers,
        targets=targets,
        call=call,
        send=send,
        request_id=request_id,
        extra_headers=[(b"x-gateway-request-id", request_id.encode())],
        outcome=RelayOutcome(),
    )


def _model_info(name: str) -> dict[str, Any]:
    return {"type": "model", "id": name, "display_name": name, "created_at": "2025-01-01T00:00:00Z"}


async def list_models(runtime: Runtime, request: Incoming, receive: Receive, send: Send) -> None:
    """The routed models this key may use, in the Anthropic list shape."""
    policy = await authenticate(runtime, request)
    routing = await runtime.snapshots.routing()
    names = [n for n in routing.public_names() if policy.allows_model(n)]
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
    )


async def get_model(runtime: Runtime, request: Incoming, receive: Receive, send: Send) -> None:
    policy = await authenticate(runtime, request)
    name = request.path.rsplit("/", 1)[-1]
    routing = await runtime.snapshots.routing()
    if not routing.targets_for(name) or not policy.allows_model(name):
        raise GatewayError(404, "not_found_error", f'Model "{name}" is not available to this key.')
    await send_json(send, 200, _model_info(name))


__all__ = ["AdmissionPlan", "count_tokens", "get_model", "list_models", "messages"]
