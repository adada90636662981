"""POST /v1/messages, whatever API the client speaks: authenticate, read, govern, forward, meter."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import orjson

from governance.policy import KeyPolicy, RouteTarget
from governance.pricing import Usage
from proxy import spendsignals, subscription, toolfilter
from proxy.asgi import ClientGone, Incoming, Receive, Send, read_body
from proxy.auth import authenticate
from proxy.budgeting import (
    Admitted,
    admit_request,
    failover_admission,
    governed_model,
    request_cost,
    settle,
)
from proxy.counters.base import CounterStoreUnavailable
from proxy.errors import GatewayError
from proxy.forwarding import Outcome as RelayOutcome
from proxy.forwarding import forward, run_until_disconnect
from proxy.hotsettings import hot
from proxy.inbound import Prepare, Prepared, forwardable_headers, model_refusal, prepare_anthropic
from proxy.providers.base import UpstreamCall
from proxy.records import (
    as_refusal,
    attempt_log,
    attribute_key,
    attribute_request,
    new_event,
    record_refusal,
)
from proxy.runtime import Runtime
from telemetry import observe

logger = logging.getLogger("gateway.proxy")


# Providers whose answers may come without usage (OpenAI-compatible servers that never send
# the usage chunk, or a stream cut before it).
USAGE_OPTIONAL_KINDS = frozenset({"openai", "openai-compatible"})


CHARS_PER_TOKEN_ESTIMATE = 4


def prepare_session(body: bytes) -> Prepared:
    """A signed-in Claude Code session's request: Anthropic, answered with budget signals."""
    prepared = prepare_anthropic(body)
    return Prepared(prepared.parsed, prepared.body, spendsignals.SessionShape())


async def session_messages(
    runtime: Runtime, request: Incoming, receive: Receive, send: Send
) -> None:
    await serve_messages(
        runtime, request, receive, send, route="claude_code.messages", prepare=prepare_session
    )


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
    event = new_event(request, route)
    policy: KeyPolicy | None = None
    taken = 0
    try:
        try:
            policy = await authenticate(runtime, request)
            attribute_key(event, policy)
            token = subscription.subscription_token(request.headers)
            if token:
                event["billing"] = "subscription"
                subscription.check_allowed(policy)
            request.body, taken = await read_body(
                receive, request, hot.max_body_bytes, runtime.inflight_bytes
            )
            prepared = prepare(request.body)
            if toolfilter.names_mcp_tools(prepared.parsed):  # not awaited when there are none
                prepared = await _govern_tools(runtime, policy, prepared)
            parsed = prepared.parsed
            attribute_request(event, request.headers, parsed)
            decision = policy.decide_model(parsed["model"])
            if not decision.allowed:
                raise model_refusal(decision.refusal)
            if not policy.available(parsed["model"]):
                raise GatewayError(
                    400,
                    "invalid_request_error",
                    f'Model "{parsed["model"]}" is not in your team\'s available models '
                    f"({', '.join(policy.available_models)}).",
                )
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
            refusal = as_refusal(failure, request.request_id)
            if "session_id" not in event:
                attribute_request(event, request.headers, None)
            record_refusal(runtime, event, refusal, policy, started=started)
            if refusal is failure:
                raise
            raise refusal from failure
        if isinstance(prepared.shape, spendsignals.SessionShape) and admitted.fullest:
            planned, used = admitted.fullest
            prepared.shape.signals = spendsignals.allowed_headers(
                planned.rule, planned.window, used
            )
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


async def _govern_tools(runtime: Runtime, policy: KeyPolicy, prepared: Prepared) -> Prepared:
    """The request without the MCP tool definitions the key's grants do not allow."""
    parsed, removed = toolfilter.without_ungranted_tools(
        prepared.parsed, policy, await runtime.snapshots.mcp_catalog()
    )
    if not removed:
        return prepared
    return Prepared(parsed, orjson.dumps(parsed), prepared.shape)


# Requests in flight from which each takes turns (take_turns). Measured against not taking
# turns (benchmarks/compare.py, CPU per request): 3 in flight 1.07, 5 even, 10 0.87.
TAKE_TURNS_FROM = 5


async def take_turns(runtime: Runtime) -> None:
    """With enough other requests in flight, let the loop run them before this one goes on.

    Called after admission (before forwarding) and after the answer (before the bookkeeping):
    the loop then runs each stage for several requests in a row, which costs less CPU per
    request than running each request from start to end once several are at the same stage;
    with few in flight the extra loop turn costs more than it saves (TAKE_TURNS_FROM).
    """
    if runtime.requests_in_flight >= TAKE_TURNS_FROM:
        await asyncio.sleep(0)


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
    disconnected = relayed = False
    forwarded_at: float | None = None  # stopped before its turn: never forwarded
    ended: float | None = None
    try:
        await take_turns(runtime)
        forwarded_at = time.perf_counter()
        # Deployments cooling down go last (all of them: still tried); one request probes each.
        health = await runtime.health.plan(admitted.order)
        work = forward(
            providers=runtime.providers,
            order=health.targets,
            call=call,
            send=send,
            request_id=request.request_id,
            extra_headers=[(b"x-gateway-request-id", request.request_id.encode())],
            outcome=outcome,
            before_attempt=failover_admission(runtime, policy, admitted),
            shape=prepared.shape,
            observer=health,
            limits=runtime.failover_limits,
        )
        disconnected = await run_until_disconnect(work, receive)
        relayed, ended = True, time.perf_counter()
        await take_turns(runtime)
    except GatewayError as failure:
        outcome.status, outcome.error_type = failure.status, failure.error_type
        outcome.error_message = outcome.error_message or failure.message
        raise
    except Exception as exc:
        outcome.status, outcome.error_type = 500, "api_error"
        outcome.error_message = f"gateway error: {type(exc).__name__}"
        raise
    except asyncio.CancelledError:
        # The server is shutting down and its drain time is over: the answer is cut short
        # (unless it was all sent and only its bookkeeping was waiting).
        if not relayed:
            outcome.error_type = outcome.error_type or "api_error"
            outcome.error_message = "cut short: the gateway shut down before the answer ended"
        raise
    finally:
        ended = ended or time.perf_counter()
        await _finish(
            runtime,
            event,
            policy,
            admitted,
            outcome,
            started=started,
            ended=ended,
            disconnected=disconnected,
        )
        observe.request_finished(
            event,
            policy,
            started=started,
            ended=ended,
            forwarded_at=forwarded_at,
            targets=admitted.order,
        )


def _usage_unreported(outcome: RelayOutcome, target: RouteTarget, usage: Usage) -> bool:
    return (
        outcome.reached_upstream
        and outcome.status == 200
        and target.provider.kind in USAGE_OPTIONAL_KINDS
        and usage.prompt_tokens == 0
        and usage.output_tokens == 0
    )


async def _finish(
    runtime: Runtime,
    event: dict[str, Any],
    policy: KeyPolicy,
    admitted: Admitted,
    outcome: RelayOutcome,
    *,
    started: float,
    ended: float,
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
            latency_ms=int((ended - started) * 1000),
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
        await settle(runtime, policy, admitted, target, cost_micros=cost, tokens=tokens)
    except CounterStoreUnavailable:
        logger.warning(
            "could not settle request %s; reconciliation will correct counters",
            event["request_id"],
        )
    except Exception:
        logger.exception("settling request %s failed", event["request_id"])
