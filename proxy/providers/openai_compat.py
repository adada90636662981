"""OpenAI Chat Completions servers spoken as Anthropic (providers of kind "openai" and
"openai-compatible": OpenAI itself, Groq, Mistral, OpenRouter, vLLM, Ollama, ...).

The Anthropic request is translated by proxy.translate (PROTOCOLS.md 3) and POSTed to
`{base_url}/chat/completions` with `Authorization: Bearer <api_key>`; nothing the client sent
goes upstream but what the translation keeps (no anthropic-* header, no client header at all).
Answers come back in Anthropic's shape so failover, metering and the ledger never learn which
provider served: a chat completion as an Anthropic message, an OpenAI stream as Anthropic SSE
(usage in the final `message_delta`, which UsageTally reads), errors with the status and body
Anthropic would answer (503 -> 529; 401 and 403 kept, so the gateway reports its own rejected
credential as 502).

Provider fields:
- `base_url` written as OpenAI clients write it, `/v1` included (`https://api.groq.com/openai/v1`,
  `http://localhost:11434/v1`); kind "openai" defaults to https://api.openai.com/v1, kind
  "openai-compatible" requires one.
- credentials `api_key` (sent as a bearer token; none for a local server that wants none).
- settings `max_tokens_field` ("max_tokens", the default for "openai-compatible", or
  "max_completion_tokens", the default for "openai": OpenAI's reasoning models refuse the
  other), `max_output_tokens` (a cap on max_tokens: Claude Code asks for 32000, which Groq and
  many others refuse), `organization` and `project` (OpenAI's headers).

count_tokens: Chat Completions has no token-counting endpoint, and an estimate would be a
number the gateway made up; the answer is 404 not_found_error "count_tokens is not available
on provider X", which the gateway can fail over from or show as it is.

Usage: a server that never sends the include_usage chunk leaves the request metered at zero
tokens; a warning is logged, at most once per provider every USAGE_WARNING_INTERVAL seconds.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Literal

import aiohttp
import orjson

from governance.policy import ProviderConfig, RouteTarget
from proxy.errors import anthropic_error_body
from proxy.providers.base import UpstreamCall
from proxy.translate import (
    OpenAIStreamToAnthropic,
    ToolNames,
    TranslationError,
    anthropic_request_to_openai,
    openai_error_to_anthropic,
    openai_ratelimit_headers_to_anthropic,
    openai_response_to_anthropic,
)
from proxy.translate.sse import anthropic_event
from proxy.upstream import HttpResponse, UpstreamClient, UpstreamResponse

logger = logging.getLogger("gateway.providers.openai")

OPENAI_KIND = "openai"
OPENAI_BASE_URL = "https://api.openai.com/v1"
USER_AGENT = "claude-gateway"
MaxTokensField = Literal["max_tokens", "max_completion_tokens"]
MAX_TOKENS_FIELDS: tuple[MaxTokensField, ...] = ("max_tokens", "max_completion_tokens")
SETTING_HEADERS = {"organization": "openai-organization", "project": "openai-project"}
USAGE_WARNING_INTERVAL = 600.0
USAGE_WARNING_PROVIDERS = 256  # providers remembered for the rate limit (configs change)
# What a failed read of the upstream stream raises (payload errors, read timeouts, resets).
READ_ERRORS = (aiohttp.ClientError, TimeoutError, OSError)
# Fed to the stream translator when the connection breaks: the blank lines end any frame left
# half-received, then an OpenAI stream error makes the translator send the usage seen so far
# and an Anthropic `error` event.
INTERRUPTED = {"error": {"type": "server_error", "message": "The upstream stream was interrupted."}}
INTERRUPTED_FRAME = b"\n\ndata: " + orjson.dumps(INTERRUPTED) + b"\n\n"
MESSAGE_STOP = b"event: message_stop\n"
# The status of an Anthropic error type, for errors that come inside a 200 stream before any
# content (failover can still act on them: nothing has reached the client).
STATUS_BY_ERROR_TYPE = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}


class ProviderMisconfigured(OSError):
    """A provider whose settings cannot make a request (an OSError so that the request fails
    over to the next deployment, like one that cannot be reached)."""


# --- requests --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Endpoint:
    url: str
    headers: dict[str, str]
    max_tokens_field: MaxTokensField
    max_output_tokens: int | None


def _base_url(provider: ProviderConfig) -> str:
    base = provider.base_url.strip() or (OPENAI_BASE_URL if provider.kind == OPENAI_KIND else "")
    if not base.startswith(("https://", "http://")):
        raise ProviderMisconfigured(f"provider {provider.name}: base_url must be an http(s) URL")
    return base.rstrip("/")


def _max_tokens_field(provider: ProviderConfig) -> MaxTokensField:
    value = provider.settings.get("max_tokens_field")
    if value is None or value == "":
        return "max_completion_tokens" if provider.kind == OPENAI_KIND else "max_tokens"
    for field in MAX_TOKENS_FIELDS:
        if value == field:
            return field
    raise ProviderMisconfigured(
        f"provider {provider.name}: max_tokens_field must be one of {', '.join(MAX_TOKENS_FIELDS)}"
    )


def _max_output_tokens(provider: ProviderConfig) -> int | None:
    value = provider.settings.get("max_output_tokens")
    if value is None or value == "":
        return None
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    raise ProviderMisconfigured(
        f"provider {provider.name}: max_output_tokens must be a positive integer"
    )


def _headers(provider: ProviderConfig) -> dict[str, str]:
    headers = {
        "content-type": "application/json",
        "accept": "application/json",
        "accept-encoding": "identity",
        "user-agent": USER_AGENT,
    }
    api_key = provider.credentials.get("api_key", "").strip()
    if api_key:
        headers["authorization"] = f"Bearer {api_key}"
    for setting, header in SETTING_HEADERS.items():
        value = provider.settings.get(setting)
        if isinstance(value, str) and value.strip() and value.isprintable():
            headers[header] = value.strip()
    return headers


def endpoint_of(provider: ProviderConfig) -> Endpoint:
    return Endpoint(
        url=_base_url(provider) + "/chat/completions",
        headers=_headers(provider),
        max_tokens_field=_max_tokens_field(provider),
        max_output_tokens=_max_output_tokens(provider),
    )


# --- answers ---------------------------------------------------------------------------------


class OpenAIReply:
    """An answer made whole here: an Anthropic message, an Anthropic error, or (for a server
    that answered a stream request with JSON) the message as Anthropic SSE."""

    def __init__(
        self,
        status: int,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        content_type: str = "application/json",
    ) -> None:
        self.status = status
        self.headers = headers
        self.content_type = content_type
        self._body = body

    async def chunks(self) -> AsyncIterator[bytes]:
        yield self._body

    async def read(self) -> bytes:
        return self._body

    async def close(self) -> None:
        return None


def refused(status: int, error_type: str, message: str) -> OpenAIReply:
    return OpenAIReply(status, [], anthropic_error_body(error_type, message, ""))


class UsageWarnings:
    """A warning for a provider that reports no usage, at most once per provider per interval:
    one misconfigured server must not flood the log with a line per request."""

    def __init__(self, clock: Callable[[], float], interval: float) -> None:
        self._clock = clock
        self._interval = interval
        self._last: dict[str, float] = {}

    def missing(self, provider: str) -> None:
        now = self._clock()
        last = self._last.get(provider)
        if last is not None and now - last < self._interval:
            return
        if last is None and len(self._last) >= USAGE_WARNING_PROVIDERS:
            del self._last[next(iter(self._last))]
        self._last[provider] = now
        logger.warning(
            "provider %s answered without token usage (no include_usage chunk): "
            "the request is metered at zero tokens",
            provider,
        )


class OpenAIStream:
    """A 200 OpenAI stream re-emitted as Anthropic SSE, one write per upstream read."""

    status = 200
    content_type = "text/event-stream"

    def __init__(
        self,
        response: HttpResponse,
        headers: list[tuple[bytes, bytes]],
        *,
        provider: str,
        upstream: AsyncIterator[bytes],
        translator: OpenAIStreamToAnthropic,
        first: bytes,
        on_complete: Callable[[OpenAIStreamToAnthropic], None],
    ) -> None:
        self.headers = headers
        self._provider = provider
        self._response = response
        self._upstream = upstream
        self._translator = translator
        self._first = first
        self._on_complete = on_complete

    async def chunks(self) -> AsyncIterator[bytes]:
        if self._first:
            first, self._first = self._first, b""
            yield first
        translator = self._translator
        while not translator.finished:
            try:
                data = await anext(self._upstream)
            except StopAsyncIteration:
                out = translator.close()
            except READ_ERRORS as exc:
                # Anthropic-shaped to the end: the client gets an `error` event (and the
                # usage seen so far), the ledger a failed request, never a silent truncation.
                logger.warning(
                    "provider %s: stream interrupted: %s", self._provider, type(exc).__name__
                )
                out = translator.feed(INTERRUPTED_FRAME)
                if out:
                    yield out
                return
            else:
                out = translator.feed(data)
            if out:
                yield out
            if MESSAGE_STOP in out:
                self._on_complete(translator)

    async def read(self) -> bytes:
        return b"".join([chunk async for chunk in self.chunks()])

    async def close(self) -> None:
        # The upstream generator is left suspended when the client stops reading early.
        aclose = getattr(self._upstream, "aclose", None)
        if aclose is not None:
            await aclose()
        await self._response.close()


def client_headers(response: HttpResponse) -> list[tuple[bytes, bytes]]:
    """retry-after as is; OpenAI's request id and rate-limit headers in Anthropic's names."""
    upstream = response.upstream_headers
    headers = [
        (name, value)
        for name, value in response.headers
        if name != b"request-id" and not name.startswith(b"anthropic-")
    ]
    request_id = upstream.get("x-request-id", "")
    if request_id and request_id.isprintable():
        headers.append((b"request-id", request_id.encode()))
    now = dt.datetime.now(dt.UTC)
    for name, value in openai_ratelimit_headers_to_anthropic(upstream, now=now).items():
        headers.append((name.encode(), value.encode()))
    return headers


def _request_id(headers: list[tuple[bytes, bytes]]) -> str:
    return next((value.decode() for name, value in headers if name == b"request-id"), "")


def message_events(message: dict[str, Any]) -> bytes:
    """A whole Anthropic message as the SSE stream Anthropic would have sent for it."""
    usage = message.get("usage") or {}
    start = {**message, "content": [], "stop_reason": None, "stop_sequence": None}
    out = bytearray(anthropic_event({"type": "message_start", "message": start}))
    for index, block in enumerate(message.get("content") or []):
        if block.get("type") == "tool_use":
            opened = {**block, "input": {}}
            delta = {
                "type": "input_json_delta",
                "partial_json": orjson.dumps(block["input"]).decode(),
            }
        else:
            opened = {**block, "text": ""}
            delta = {"type": "text_delta", "text": block.get("text", "")}
        out += anthropic_event(
            {"type": "content_block_start", "index": index, "content_block": opened}
        )
        out += anthropic_event({"type": "content_block_delta", "index": index, "delta": delta})
        out += anthropic_event({"type": "content_block_stop", "index": index})
    stop = {"stop_reason": message.get("stop_reason"), "stop_sequence": None}
    out += anthropic_event({"type": "message_delta", "delta": stop, "usage": usage})
    out += anthropic_event({"type": "message_stop"})
    return bytes(out)


def _stream_failure(events: bytes, headers: list[tuple[bytes, bytes]]) -> OpenAIReply:
    """The `error` event a stream produced before any content, as an HTTP error."""
    error: dict[str, Any] = {}
    for line in events.split(b"\n"):
        if line.startswith(b"data:"):
            event = orjson.loads(line[5:])
            error = (event.get("error") or {}) if isinstance(event, dict) else {}
    error_type = str(error.get("type") or "api_error")
    message = str(error.get("message") or "The upstream stream failed.")
    status = STATUS_BY_ERROR_TYPE.get(error_type, 500)
    return OpenAIReply(
        status, headers, anthropic_error_body(error_type, message, _request_id(headers))
    )


# --- the adapter -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Exchange:
    """What one request needs to read its answer."""

    provider: str
    model: str
    names: ToolNames
    stream: bool


class OpenAIProvider:
    """OpenAI and OpenAI-compatible Chat Completions servers behind the Anthropic Messages API.
    One instance per worker, registered for kinds "openai" and "openai-compatible".

    `clock` (monotonic seconds) exists for tests of the usage warning's rate limit.
    """

    def __init__(
        self, client: UpstreamClient, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._client = client
        self._usage_warnings = UsageWarnings(clock, USAGE_WARNING_INTERVAL)

    async def send(self, *, target: RouteTarget, call: UpstreamCall) -> UpstreamResponse:
        provider = target.provider
        if call.path.endswith("/count_tokens"):
            return refused(
                404,
                "not_found_error",
                f'count_tokens is not available on provider "{provider.name}".',
            )
        try:
            endpoint = endpoint_of(provider)
        except ProviderMisconfigured as exc:
            logger.warning("%s", exc)
            raise
        model = target.upstream_model or str(call.parsed.get("model") or "")
        try:
            body, names = anthropic_request_to_openai(
                call.parsed,
                model=model,
                max_tokens_field=endpoint.max_tokens_field,
                max_output_tokens=endpoint.max_output_tokens,
            )
        except TranslationError as exc:
            return OpenAIReply(exc.status, [], exc.anthropic_body())
        exchange = _Exchange(provider.name, model, names, body.get("stream") is True)
        response = await self._client.post(
            endpoint.url, headers=endpoint.headers, body=orjson.dumps(body)
        )
        try:
            return await self._answer(response, exchange)
        except BaseException:
            await response.close()
            raise

    async def _answer(self, response: HttpResponse, exchange: _Exchange) -> UpstreamResponse:
        headers = client_headers(response)
        if response.status == 200 and exchange.stream and "event-stream" in response.content_type:
            return await self._stream(response, headers, exchange)
        try:
            payload = await response.read()
        finally:
            await response.close()
        if response.status != 200:
            status, body, _ = openai_error_to_anthropic(
                response.status, payload, request_id=_request_id(headers)
            )
            return OpenAIReply(status, headers, body)
        try:
            message = self._message(payload, exchange)
        except TranslationError as exc:
            return OpenAIReply(exc.status, headers, exc.anthropic_body(_request_id(headers)))
        if exchange.stream:  # a server that ignores `stream`: still a stream for the client
            return OpenAIReply(200, headers, message_events(message), "text/event-stream")
        return OpenAIReply(200, headers, orjson.dumps(message))

    def _message(self, payload: bytes, exchange: _Exchange) -> dict[str, Any]:
        try:
            reply = orjson.loads(payload)
        except orjson.JSONDecodeError:
            reply = None
        if not isinstance(reply, dict):
            raise TranslationError(
                "The upstream provider sent a reply that is not JSON.", status=502
            )
        message = openai_response_to_anthropic(
            reply, tool_names=exchange.names, model=exchange.model
        )
        if not isinstance(reply.get("usage"), dict):
            self._usage_warnings.missing(exchange.provider)
        return message

    async def _stream(
        self, response: HttpResponse, headers: list[tuple[bytes, bytes]], exchange: _Exchange
    ) -> UpstreamResponse:
        """Read up to the first translated event: an error there becomes an HTTP error, so
        failover can still act (nothing has reached the client yet)."""
        translator = OpenAIStreamToAnthropic(exchange.names, exchange.model)
        upstream = aiter(response.chunks())
        first = bytearray()
        while not (translator.started or translator.finished):
            try:
                data = await anext(upstream)
            except StopAsyncIteration:
                first += translator.close()
                break
            first += translator.feed(data)
        if not translator.started:
            await response.close()
            return _stream_failure(bytes(first), headers)

        def on_complete(done: OpenAIStreamToAnthropic) -> None:
            if not done.usage_seen:
                self._usage_warnings.missing(exchange.provider)

        if MESSAGE_STOP in first:
            on_complete(translator)
        return OpenAIStream(
            response,
            headers,
            provider=exchange.provider,
            upstream=upstream,
            translator=translator,
            first=bytes(first),
            on_complete=on_complete,
        )
