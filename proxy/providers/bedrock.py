"""AWS Bedrock (InvokeModel, InvokeModelWithResponseStream, CountTokens) spoken as Anthropic.

Requests: the Anthropic body minus `model` and `stream`, plus Bedrock's `anthropic_version`
and the client's betas as `anthropic_beta` (PROTOCOLS.md 4.1), signed with SigV4 by botocore
(proxy/providers/aws_auth.py). Answers come back in Anthropic's shape so failover, metering and
the ledger never learn which provider served: a JSON message as is, Bedrock's binary event
stream decoded with botocore's parser and re-emitted as Anthropic SSE, errors and statuses
mapped to what Anthropic would answer (PROTOCOLS.md 4.3).
"""

from __future__ import annotations

import base64
import re
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import orjson
import yarl

from governance.policy import ProviderConfig, RouteTarget
from proxy.providers.aws_auth import AwsAccess, CredentialSource
from proxy.providers.base import UpstreamCall
from proxy.providers.bedrock_events import BedrockFailure, EventTranslator, joined, message_of
from proxy.upstream import HttpResponse, UpstreamClient, UpstreamResponse

BEDROCK_VERSION = "bedrock-2023-05-31"
EVENTSTREAM = "application/vnd.amazon.eventstream"
INVOKE, STREAM, COUNT = "invoke", "invoke-with-response-stream", "count-tokens"
# Betas that only mean something to Anthropic's own API (subscription OAuth never leaves it).
ANTHROPIC_ONLY_BETAS = frozenset({"oauth-2025-04-20"})
# Optional provider settings sent as Bedrock request headers (InvokeModel* only).
SETTING_HEADERS = {
    "guardrail_identifier": "x-amzn-bedrock-guardrailidentifier",
    "guardrail_version": "x-amzn-bedrock-guardrailversion",
    "performance_latency": "x-amzn-bedrock-performanceconfig-latency",
    "service_tier": "x-amzn-bedrock-service-tier",
}
REGION_PATTERN = re.compile(r"[a-z0-9-]{1,40}")
SOURCE_CACHE_SIZE = 64  # credential sources kept, one per distinct provider configuration


class ProviderMisconfigured(OSError):
    """A Bedrock provider whose settings cannot make a request (an OSError so that the request
    fails over to the next deployment, like one that cannot be reached)."""


# --- requests --------------------------------------------------------------------------------


def _betas(header: str, in_body: object) -> list[str]:
    betas = [b.strip() for b in header.split(",")] if header else []
    if isinstance(in_body, list):
        betas += [b for b in in_body if isinstance(b, str)]
    return list(dict.fromkeys(b for b in betas if b and b not in ANTHROPIC_ONLY_BETAS))


def invoke_body(call: UpstreamCall) -> bytes:
    """The InvokeModel body: Anthropic's, without what Bedrock takes from the URL."""
    body: dict[str, Any] = {k: v for k, v in call.parsed.items() if k not in ("model", "stream")}
    body["anthropic_version"] = BEDROCK_VERSION
    betas = _betas(call.headers.get("anthropic-beta", ""), body.pop("anthropic_beta", None))
    if betas:
        body["anthropic_beta"] = betas
    return orjson.dumps(body)


def count_tokens_body(call: UpstreamCall) -> bytes:
    encoded = base64.b64encode(invoke_body(call)).decode()
    return orjson.dumps({"input": {"invokeModel": {"body": encoded}}})


def model_url(provider: ProviderConfig, region: str, model: str, operation: str) -> str:
    """The URL exactly as it goes on the wire, so that its signature holds.

    Model ids and ARNs carry ':' and '/': '/' must be escaped, ':' stays as is (as in
    Anthropic's Bedrock client), and the URL is normalized the way aiohttp will send it.
    """
    if provider.base_url:
        base = provider.base_url.rstrip("/")
    elif REGION_PATTERN.fullmatch(region):
        base = f"https://bedrock-runtime.{region}.amazonaws.com"
    else:
        raise ProviderMisconfigured(f"provider {provider.name}: not an AWS region name")
    if not model:
        raise ProviderMisconfigured(f"provider {provider.name}: no model to invoke")
    return str(yarl.URL(f"{base}/model/{quote(model, safe=':')}/{operation}"))


def request_headers(provider: ProviderConfig, operation: str) -> dict[str, str]:
    headers = {"content-type": "application/json", "accept-encoding": "identity"}
    if operation == STREAM:
        headers["accept"] = EVENTSTREAM
        headers["x-amzn-bedrock-accept"] = "application/json"
    else:
        headers["accept"] = "application/json"
    if operation != COUNT:
        for setting, header in SETTING_HEADERS.items():
            value = provider.settings.get(setting)
            if isinstance(value, str) and value.strip() and value.isprintable():
                headers[header] = value.strip()
    return headers


# --- answers ---------------------------------------------------------------------------------


class BedrockReply:
    """A JSON answer: a message passed through, a token count or an error, Anthropic-shaped."""

    content_type = "application/json"

    def __init__(
        self,
        status: int,
        headers: list[tuple[bytes, bytes]],
        *,
        body: bytes | None = None,
        response: HttpResponse | None = None,
    ) -> None:
        self.status = status
        self.headers = headers
        self._body = body
        self._response = response

    async def chunks(self) -> AsyncIterator[bytes]:
        yield await self.read()

    async def read(self) -> bytes:
        if self._body is None:
            self._body = await self._response.read() if self._response is not None else b""
        return self._body

    async def close(self) -> None:
        if self._response is not None:
            await self._response.close()


class BedrockStream:
    """A 200 event stream re-emitted as Anthropic SSE, one write per upstream read."""

    status = 200
    content_type = "text/event-stream"

    def __init__(
        self,
        response: HttpResponse,
        headers: list[tuple[bytes, bytes]],
        upstream: AsyncIterator[bytes],
        translator: EventTranslator,
        first: bytes,
    ) -> None:
        self.headers = headers
        self._response = response
        self._upstream = upstream
        self._translator = translator
        self._first = first

    async def chunks(self) -> AsyncIterator[bytes]:
        if self._first:
            first, self._first = self._first, b""
            yield first
        translator = self._translator
        if translator.stopped:
            return
        async for data in self._upstream:
            frames = joined(translator.feed(data))
            if frames:
                yield frames
            if translator.stopped:
                return
        tail = joined(translator.finish())
        if tail:
            yield tail

    async def read(self) -> bytes:
        return b"".join([chunk async for chunk in self.chunks()])

    async def close(self) -> None:
        # The upstream generator is left suspended when the client stops reading early.
        aclose = getattr(self._upstream, "aclose", None)
        if aclose is not None:
            await aclose()
        await self._response.close()


def _client_headers(response: HttpResponse) -> tuple[list[tuple[bytes, bytes]], str]:
    request_id = response.upstream_headers.get("x-amzn-requestid", "")
    headers = [(name, value) for name, value in response.headers if name != b"request-id"]
    if request_id:
        headers.append((b"request-id", request_id.encode()))
    return headers, request_id


async def _error_reply(
    response: HttpResponse, headers: list[tuple[bytes, bytes]], request_id: str
) -> BedrockReply:
    payload = await response.read()
    exception = response.upstream_headers.get("x-amzn-errortype", "")
    if not exception:
        try:
            parsed = orjson.loads(payload)
            exception = str(parsed.get("__type") or "") if isinstance(parsed, dict) else ""
        except orjson.JSONDecodeError:
            exception = ""
    failure = BedrockFailure.of(exception, message_of(payload), response.status)
    await response.close()
    return BedrockReply(failure.status, headers, body=failure.body(request_id))


async def _count_reply(
    response: HttpResponse, headers: list[tuple[bytes, bytes]], request_id: str
) -> BedrockReply:
    payload = await response.read()
    await response.close()
    try:
        count = orjson.loads(payload)["inputTokens"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        count = None
    if not isinstance(count, int) or isinstance(count, bool):
        failure = BedrockFailure(502, "api_error", "Bedrock answered without a token count.")
        return BedrockReply(failure.status, headers, body=failure.body(request_id))
    return BedrockReply(200, headers, body=orjson.dumps({"input_tokens": count}))


async def _stream_reply(
    response: HttpResponse, headers: list[tuple[bytes, bytes]], request_id: str
) -> UpstreamResponse:
    """Read up to the first event: an exception there becomes an HTTP error, so failover can
    still act (nothing has reached the client yet)."""
    upstream = aiter(response.chunks())
    translator = EventTranslator()
    items: list[bytes | BedrockFailure] = []
    while not items:
        try:
            data = await anext(upstream)
        except StopAsyncIteration:
            items = translator.finish() or [
                BedrockFailure(502, "api_error", "The Bedrock stream ended before any event.")
            ]
            break
        items = translator.feed(data)
    if isinstance(items[0], BedrockFailure):
        await response.close()
        return BedrockReply(items[0].status, headers, body=items[0].body(request_id))
    return BedrockStream(response, headers, upstream, translator, joined(items))


async def answer(response: HttpResponse, operation: str) -> UpstreamResponse:
    """Bedrock's HTTP answer in Anthropic's shape."""
    headers, request_id = _client_headers(response)
    if response.status != 200:
        return await _error_reply(response, headers, request_id)
    if operation == COUNT:
        return await _count_reply(response, headers, request_id)
    if operation == STREAM and EVENTSTREAM in response.content_type:
        return await _stream_reply(response, headers, request_id)
    return BedrockReply(200, headers, response=response)


# --- the adapter -----------------------------------------------------------------------------


class BedrockProvider:
    """Claude on AWS Bedrock behind the Anthropic Messages API (providers of kind "bedrock").

    Provider fields: `region`, `base_url` (a VPC endpoint or a local fake instead of
    bedrock-runtime.{region}.amazonaws.com); credentials `access_key_id`, `secret_access_key`,
    `session_token`, or `api_key` (a Bedrock API key); settings `profile`, `role_arn`,
    `external_id`, `role_session_name` and the Bedrock headers in SETTING_HEADERS.
    """

    def __init__(self, client: UpstreamClient) -> None:
        self._client = client
        self._sources: dict[AwsAccess, CredentialSource] = {}

    def _source(self, provider: ProviderConfig) -> CredentialSource:
        access = AwsAccess.of(provider)
        source = self._sources.get(access)
        if source is None:
            if len(self._sources) >= SOURCE_CACHE_SIZE:  # configs replaced over time
                del self._sources[next(iter(self._sources))]
            source = self._sources[access] = CredentialSource(access)
        return source

    async def send(self, *, target: RouteTarget, call: UpstreamCall) -> UpstreamResponse:
        provider = target.provider
        resolved = await self._source(provider).resolve()
        if call.path.endswith("/count_tokens"):
            operation, body = COUNT, count_tokens_body(call)
        else:
            operation, body = (STREAM if call.stream else INVOKE), invoke_body(call)
        model = target.upstream_model or str(call.parsed.get("model") or "")
        url = model_url(provider, resolved.region, model, operation)
        headers = resolved.authorize(
            url=url, headers=request_headers(provider, operation), body=body
        )
        response = await self._client.post(url, headers=headers, body=body)
        try:
            return await answer(response, operation)
        except BaseException:
            await response.close()
            raise
