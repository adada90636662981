"""The inbound OpenAI API: /openai/v1/chat/completions and /openai/v1/models.

An OpenAI Chat Completions request is translated to an Anthropic Messages request
(proxy/translate) and then governed exactly like one: the same virtual keys (Authorization:
Bearer), budgets, limits, routing, failover, metering and ledger row (route "openai.chat").
The answer is metered in its Anthropic form and converted to the OpenAI form on its way out;
errors are OpenAI-shaped, with a 529 becoming 503.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import orjson
from django.conf import settings

from proxy import handlers, translate
from proxy.asgi import Incoming, Receive, Send, send_json
from proxy.auth import authenticate_recorded
from proxy.errors import GatewayError
from proxy.forwarding import StreamConverter
from proxy.inbound import Prepared, check_messages_request
from proxy.messages import serve_messages
from proxy.runtime import Runtime

# Response headers an OpenAI client gets as they are (Anthropic rate-limit headers are
# converted to OpenAI's, the rest dropped).
KEPT_HEADERS = frozenset({b"x-gateway-request-id", b"retry-after", b"request-id"})


class OpenAIShape:
    """Converts the Anthropic-shaped answer of one request for an OpenAI client."""

    def __init__(self, *, model: str, include_usage: bool) -> None:
        self.model = model
        self.include_usage = include_usage
        self.created = int(time.time())

    def reply(self, status: int, body: bytes) -> tuple[int, bytes]:
        if status != 200:
            return translate.anthropic_error_to_openai(status, body)
        try:
            message = orjson.loads(body)
        except orjson.JSONDecodeError:
            return 502, translate.openai_error_body(
                "The upstream provider's answer was not valid JSON.", error_type="server_error"
            )
        reply = translate.anthropic_response_to_openai(
            message, model=self.model, created=self.created
        )
        return 200, orjson.dumps(reply)

    def stream(self) -> StreamConverter:
        return translate.AnthropicStreamToOpenAI(
            include_usage=self.include_usage, model=self.model, created=self.created
        )

    def headers(self, headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        kept = [(name, value) for name, value in headers if name in KEPT_HEADERS]
        limits = {
            name.decode(): value.decode()
            for name, value in headers
            if name.startswith(b"anthropic-ratelimit-")
        }
        if limits:
            converted = translate.anthropic_ratelimit_headers_to_openai(
                limits, now=dt.datetime.now(dt.UTC)
            )
            kept += [(name.encode(), value.encode()) for name, value in converted.items()]
        return kept


def prepare_openai(body: bytes) -> Prepared:
    try:
        request = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise GatewayError(
            400, "invalid_request_error", f"Request body is not valid JSON: {exc}"
        ) from exc
    if not isinstance(request, dict):
        raise GatewayError(400, "invalid_request_error", "Request body must be a JSON object.")
    try:
        anthropic = translate.openai_request_to_anthropic(
            request, default_max_tokens=settings.GATEWAY_OPENAI_DEFAULT_MAX_TOKENS
        )
    except translate.TranslationError as exc:
        raise GatewayError(exc.status, "invalid_request_error", str(exc)) from exc
    parsed = check_messages_request(anthropic, need_max_tokens=True)
    shape = OpenAIShape(model=parsed["model"], include_usage=translate.wants_usage(request))
    return Prepared(parsed, orjson.dumps(parsed), shape)


async def chat_completions(
    runtime: Runtime, request: Incoming, receive: Receive, send: Send
) -> None:
    await serve_messages(
        runtime, request, receive, send, route="openai.chat", prepare=prepare_openai
    )


async def list_models(runtime: Runtime, request: Incoming, receive: Receive, send: Send) -> None:
    """The models this key may use, in the OpenAI list shape."""
    policy = await authenticate_recorded(runtime, request, "openai.models")
    routing = await runtime.snapshots.routing()
    data: list[dict[str, Any]] = [
        {"id": name, "object": "model", "created": 0, "owned_by": "gateway"}
        for name in routing.public_names()
        if handlers.servable(policy, routing.targets_for(name), name)
    ]
    await send_json(
        send,
        200,
        {"object": "list", "data": data},
        headers=[(b"x-gateway-request-id", request.request_id.encode())],
    )
