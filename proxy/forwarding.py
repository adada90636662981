"""Send a call to the route's deployments in order, fail over, and relay the answer.

Failover happens only before the client has received a byte: on connection errors and on
retryable statuses (408, 429, 5xx, 529). Streams are relayed chunk by chunk as they arrive.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

import aiohttp
import orjson

from governance.policy import RouteTarget
from proxy.asgi import Receive, Send
from proxy.errors import GatewayError, anthropic_error_body, anthropic_type_for
from proxy.metering import UsageTally
from proxy.providers.base import Provider, UpstreamCall
from proxy.upstream import UpstreamResponse

RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504, 529})
# What a failed read of an upstream answer raises (payload errors, read timeouts, resets).
READ_ERRORS = (aiohttp.ClientError, TimeoutError, OSError)
# Called before each failover attempt: None to go ahead, or the refusal that skips this
# deployment (raised if it was the last one).
BeforeAttempt = Callable[[RouteTarget], Awaitable[GatewayError | None]]


class StreamConverter(Protocol):
    def feed(self, chunk: bytes) -> bytes: ...

    def close(self) -> bytes: ...


class ClientShape(Protocol):
    """How a client that is not an Anthropic client gets the Anthropic-shaped answer (the
    OpenAI routes). The gateway meters the Anthropic form before converting it."""

    def reply(self, status: int, body: bytes) -> tuple[int, bytes]:
        """A whole JSON answer, success or error."""

    def stream(self) -> StreamConverter: ...

    def headers(self, headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]: ...


@dataclass(slots=True)
class Outcome:
    """What the relay learned, for metering."""

    tally: UsageTally = field(default_factory=UsageTally)
    status: int = 0
    error_type: str = ""
    error_message: str = ""
    provider: str = ""
    target: RouteTarget | None = None  # the deployment tried last (the one that answered)
    upstream_model: str = ""
    attempts: int = 0
    upstream_request_id: str = ""
    first_byte_at: float | None = None
    reached_upstream: bool = False
    attempt_log: list[Attempt] = field(default_factory=list)


def failover_order(targets: Sequence[RouteTarget]) -> list[RouteTarget]:
    """Position order; deployments sharing a position are shuffled by weight."""
    if len(targets) == 1:
        return list(targets)
    ordered: list[RouteTarget] = []
    for position in sorted({t.position for t in targets}):
        group = [t for t in targets if t.position == position]
        while group:
            pick = random.choices(group, weights=[max(t.weight, 1) for t in group])[0]  # noqa: S311
            ordered.append(pick)
            group.remove(pick)
    return ordered


def _client_error(
    status: int, body: bytes, provider: str, request_id: str, *, own_credentials: bool = False
) -> tuple[int, bytes, str]:
    """An upstream error as the client should see it (Anthropic shape). With
    `own_credentials` (a Claude subscription's token) a 401 / 403 is the client's own."""
    if 300 <= status < 400 or status < 200:
        # Redirects are never followed (the gateway's credentials would go along).
        message = f'The upstream provider "{provider}" answered HTTP {status} (not followed).'
        return 502, anthropic_error_body("api_error", message, request_id), "api_error"
    if status in (401, 403) and not own_credentials:
        # The provider refused the gateway's credential: not the developer's key problem.
        message = f'The upstream provider "{provider}" rejected the gateway\'s credentials.'
        return 502, anthropic_error_body("api_error", message, request_id), "api_error"
    try:
        parsed = orjson.loads(body)
        error_type = parsed["error"]["type"]
        if isinstance(error_type, str) and parsed.get("type") == "error":
            return status, body, error_type
    except (orjson.JSONDecodeError, KeyError, TypeError):
        pass
    error_type = anthropic_type_for(status)
    message = f'The upstream provider "{provider}" answered HTTP {status}.'
    return status, anthropic_error_body(error_type, message, request_id), error_type


class Attempt(NamedTuple):
    """One try of one deployment, kept with the usage record (a named tuple: one is made per
    request, and a frozen dataclass costs several times as much to build)."""

    provider: str
    model: str
    status: int  # 0: no answer (connection refused, timeout)
    latency_ms: int
    error: str = ""

    def as_dict(self) -> dict[str, object]:
        entry: dict[str, object] = {
            "provider": self.provider,
            "model": self.model,
            "status": self.status,
            "latency_ms": self.latency_ms,
        }
        if self.error:
            entry["error"] = self.error
        return entry


class AttemptObserver(Protocol):
    """Deployment health: told about every attempt (must never raise), and asked before one
    whether a deployment that was cooling down may be probed by this request."""

    def __call__(
        self, target: RouteTarget, *, status: int, latency_ms: int, retry_after: float | None
    ) -> None: ...

    @property
    def may_skip(self) -> bool:
        """False when no deployment of the request's order cools down: started() then
        stands in for claim(), without an await."""

    async def claim(self, target: RouteTarget) -> bool: ...

    def started(self, target: RouteTarget) -> None: ...


@dataclass(frozen=True, slots=True)
class Limits:
    """How far failover goes: at most `attempts` deployments, none started after `seconds`."""

    attempts: int = 4
    seconds: float = 90.0


async def _send_upstream(
    provider: Provider,
    target: RouteTarget,
    call: UpstreamCall,
    outcome: Outcome,
    observer: AttemptObserver | None,
) -> UpstreamResponse | None:
    outcome.attempts += 1
    outcome.provider = target.provider.name
    outcome.target = target
    outcome.upstream_model = target.upstream_model
    started = time.perf_counter()
    try:
        response = await provider.send(target=target, call=call)
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        outcome.error_type = "api_error"
        outcome.error_message = f"could not reach {target.provider.name}: {type(exc).__name__}"
        _attempted(outcome, observer, target, status=0, started=started, error=type(exc).__name__)
        return None
    _attempted(
        outcome,
        observer,
        target,
        status=response.status,
        started=started,
        retry_after=(
            _retry_after(response.headers) if response.status in RETRYABLE_STATUSES else None
        ),
    )
    return response


def _attempted(
    outcome: Outcome,
    observer: AttemptObserver | None,
    target: RouteTarget,
    *,
    status: int,
    started: float,
    error: str = "",
    retry_after: float | None = None,
) -> None:
    latency_ms = int((time.perf_counter() - started) * 1000)
    outcome.attempt_log.append(
        Attempt(target.provider.name, target.upstream_model, status, latency_ms, error)
    )
    if observer is not None:
        observer(target, status=status, latency_ms=latency_ms, retry_after=retry_after)


def _retry_after(headers: Sequence[tuple[bytes, bytes]]) -> float | None:
    """Seconds from `retry-after-ms` or `retry-after` (seconds; an HTTP date is ignored)."""
    for name, value in headers:
        try:
            if name == b"retry-after-ms":
                return float(value) / 1000
            if name == b"retry-after":
                return float(value)
        except ValueError:
            continue
    return None


async def forward(
    *,
    providers: dict[str, Provider],
    order: Sequence[RouteTarget],
    call: UpstreamCall,
    send: Send,
    request_id: str,
    extra_headers: list[tuple[bytes, bytes]],
    outcome: Outcome,
    before_attempt: BeforeAttempt | None = None,
    shape: ClientShape | None = None,
    observer: AttemptObserver | None = None,
    limits: Limits | None = None,
) -> None:
    """Try `order` (already in failover order) until one deployment answers for good.

    A deployment that cannot be reached, or answers a retryable status (408, 429, 5xx, 529)
    before anything reached the client, hands over to the next one, within `limits`: the
    last deployment allowed answers whatever it answers.
    """
    limits = limits or Limits()
    order = order[: max(1, limits.attempts)]
    deadline = time.monotonic() + limits.seconds
    for attempt, target in enumerate(order, start=1):
        last = attempt == len(order) or time.monotonic() >= deadline
        provider = providers.get(target.provider.kind)
        if provider is None:
            outcome.provider = target.provider.name
            if last:
                raise GatewayError(
                    502,
                    "api_error",
                    f'Provider kind "{target.provider.kind}" is not available in this gateway.',
                )
            continue
        if before_attempt is not None and attempt > 1:
            refusal = await before_attempt(target)
            if refusal is not None:
                if last:
                    raise refusal
                continue
        if observer is not None:
            if not observer.may_skip:
                observer.started(target)
            elif not await observer.claim(target):
                continue  # cooling down, and another request is probing it
        response = await _send_upstream(provider, target, call, outcome, observer)
        if response is None:
            if last:
                raise GatewayError(
                    502,
                    "api_error",
                    f'The upstream provider "{target.provider.name}" could not be reached.',
                )
            continue
        outcome.reached_upstream = True
        if response.status in RETRYABLE_STATUSES and not last:
            await response.close()
            continue
        await relay(
            response,
            call=call,
            send=send,
            request_id=request_id,
            extra_headers=extra_headers,
            outcome=outcome,
            shape=shape,
        )
        return


async def relay(
    response: UpstreamResponse,
    *,
    call: UpstreamCall,
    send: Send,
    request_id: str,
    extra_headers: list[tuple[bytes, bytes]],
    outcome: Outcome,
    shape: ClientShape | None = None,
) -> None:
    outcome.status = response.status
    headers = [*response.headers, *extra_headers]
    if shape is not None:
        headers = shape.headers(headers)
    outcome.upstream_request_id = next(
        (v.decode() for k, v in response.headers if k == b"request-id"), ""
    )
    try:
        if response.status == 200 and "text/event-stream" in response.content_type:
            await _relay_stream(
                response,
                send=send,
                headers=headers,
                outcome=outcome,
                request_id=request_id,
                converter=shape.stream() if shape is not None else None,
            )
            return
        status = response.status
        try:
            body = await response.read()
        except READ_ERRORS as exc:
            # The status line arrived, the body did not: nothing has reached the client yet,
            # so it gets a proper error instead of a half answer.
            outcome.error_message = (
                f"reading the upstream answer failed after HTTP {status}: {type(exc).__name__}"
            )
            raise GatewayError(
                502,
                "api_error",
                f'The upstream provider "{outcome.provider}" answered HTTP {status} but its '
                "response could not be read to the end.",
            ) from exc
        if status == 200:
            outcome.tally.feed_json(body)
        else:
            status, body, outcome.error_type = _client_error(
                status,
                body,
                outcome.provider,
                request_id,
                own_credentials=bool(call.subscription_token),
            )
            outcome.status = status
        if shape is not None:
            status, body = shape.reply(status, body)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    *headers,
                ],
            }
        )
        outcome.first_byte_at = time.perf_counter()
        await send({"type": "http.response.body", "body": body})
    finally:
        await response.close()


async def _relay_stream(
    response: UpstreamResponse,
    *,
    send: Send,
    headers: list[tuple[bytes, bytes]],
    outcome: Outcome,
    request_id: str,
    converter: StreamConverter | None = None,
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"text/event-stream; charset=utf-8"),
                (b"cache-control", b"no-cache"),
                (b"x-accel-buffering", b"no"),
                *headers,
            ],
        }
    )
    tally = outcome.tally
    try:
        async for chunk in response.chunks():
            if outcome.first_byte_at is None:
                outcome.first_byte_at = time.perf_counter()
            tally.feed_sse(chunk)
            out = chunk if converter is None else converter.feed(chunk)
            if out:
                await send({"type": "http.response.body", "body": out, "more_body": True})
    except READ_ERRORS as exc:
        # The upstream dropped mid-stream: tell the client in the stream's own language.
        tally.error_type = tally.error_type or "api_error"
        outcome.error_message = f"upstream stream interrupted: {type(exc).__name__}"
        message = f'The upstream provider "{outcome.provider}" stream was interrupted.'
        frame = (
            b"event: error\ndata: "
            + orjson.dumps(
                {
                    "type": "error",
                    "error": {"type": "api_error", "message": message},
                    "request_id": request_id,
                }
            )
            + b"\n\n"
        )
        if converter is not None:
            frame = converter.feed(frame)
        await send({"type": "http.response.body", "body": frame, "more_body": True})
    if tally.error_type:
        outcome.error_type = tally.error_type
    tail = converter.close() if converter is not None else b""
    await send({"type": "http.response.body", "body": tail, "more_body": False})


# A request still running after this long gets a task that watches for its client leaving;
# one answered sooner never does. The task cost 4 % of the CPU per request at 30 requests in
# flight (benchmarks/README.md, "third session"); a client that leaves is noticed at most this
# much later.
WATCH_AFTER_SECONDS = 0.2


async def run_until_disconnect(work: Awaitable[None], receive: Receive) -> bool:
    """Run `work` in this task; if the client leaves first, cancel the work where it waits and
    return True. The client is watched (`receive` awaited in a task of its own) only once the
    work has run for WATCH_AFTER_SECONDS.
    """
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    gone = finished = False
    watcher: asyncio.Task[None] | None = None

    def on_watch_done(done: asyncio.Future[None]) -> None:
        nonlocal gone
        if done.cancelled():
            return
        done.exception()  # retrieved: a failed receive counts as the client gone
        if not finished:
            gone = True
            task.cancel()

    def start_watching() -> None:
        nonlocal watcher
        if not finished:
            watcher = loop.create_task(_watch_disconnect(receive))
            watcher.add_done_callback(on_watch_done)

    timer = loop.call_later(WATCH_AFTER_SECONDS, start_watching)
    try:
        await work
    except BaseException:
        # The cancellation this function caused, or whatever the cancelled work raised on
        # its way out; anything else (the server shutting down included) is the caller's.
        if not gone:
            raise
    finally:
        finished = True
        timer.cancel()
        if watcher is not None:
            watcher.cancel()
    if gone:
        task.uncancel()
        return True
    return False


async def _watch_disconnect(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
