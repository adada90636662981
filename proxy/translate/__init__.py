"""Anthropic Messages <-> OpenAI Chat Completions, as pure functions (no I/O).

Two uses:
(a) the inbound OpenAI API in front of Claude: OpenAI request -> Anthropic request, Anthropic
    reply or stream -> OpenAI reply or stream;
(b) Anthropic clients (Claude Code) routed to OpenAI-compatible upstreams: Anthropic request ->
    OpenAI request, OpenAI reply or stream -> Anthropic reply or stream.

    from proxy import translate

    # (a)
    body = translate.openai_request_to_anthropic(openai_body, default_max_tokens=4096)
    include_usage = translate.wants_usage(openai_body)
    reply = translate.anthropic_response_to_openai(message, model=requested_model)
    stream = translate.AnthropicStreamToOpenAI(include_usage=include_usage, model=requested_model)
    status, body = translate.anthropic_error_to_openai(status, body)        # 529 -> 503

    # (b)
    body, names = translate.anthropic_request_to_openai(anthropic_body, model=upstream_model)
    message = translate.openai_response_to_anthropic(reply, tool_names=names, model=shown_model)
    stream = translate.OpenAIStreamToAnthropic(names, shown_model)
    status, body, error_type = translate.openai_error_to_anthropic(status, body)  # 503 -> 529

    # streams, either direction: out = stream.feed(chunk) per upstream chunk, any chunking
    # (frames split anywhere, CRLF allowed); out = stream.close() when the upstream body ends.

A request neither API can express raises TranslationError (status 400, a message naming the
field, `.anthropic_body()` / `.openai_body()`); an upstream reply that is not a chat completion
raises it with status 502. What each direction keeps, maps, drops or refuses is listed in the
docstring of its module: requests_to_anthropic (with messages_to_anthropic),
requests_to_openai, responses, streams_to_anthropic, streams_to_openai, usage (exact token
mapping, PROTOCOLS 3.4), errors, tool_names (OpenAI's `^[a-zA-Z0-9_-]{1,64}$`, reversibly),
headers (rate-limit headers).

Usage: the Anthropic streams produced here carry usage the way Anthropic's do (message_start,
then cumulative message_delta usage), so proxy.metering.UsageTally meters them unchanged;
`OpenAIStreamToAnthropic.usage_seen` says whether the upstream reported any.
"""

from __future__ import annotations

from proxy.translate.errors import (
    TranslationError,
    anthropic_error_to_openai,
    openai_error_body,
    openai_error_to_anthropic,
)
from proxy.translate.headers import (
    anthropic_ratelimit_headers_to_openai,
    openai_ratelimit_headers_to_anthropic,
)
from proxy.translate.requests_to_anthropic import openai_request_to_anthropic, wants_usage
from proxy.translate.requests_to_openai import anthropic_request_to_openai
from proxy.translate.responses import anthropic_response_to_openai, openai_response_to_anthropic
from proxy.translate.streams_to_anthropic import OpenAIStreamToAnthropic
from proxy.translate.streams_to_openai import AnthropicStreamToOpenAI
from proxy.translate.tool_names import ToolNames
from proxy.translate.usage import anthropic_usage_to_openai, openai_usage_to_anthropic

__all__ = [
    "AnthropicStreamToOpenAI",
    "OpenAIStreamToAnthropic",
    "ToolNames",
    "TranslationError",
    "anthropic_error_to_openai",
    "anthropic_ratelimit_headers_to_openai",
    "anthropic_request_to_openai",
    "anthropic_response_to_openai",
    "anthropic_usage_to_openai",
    "openai_error_body",
    "openai_error_to_anthropic",
    "openai_ratelimit_headers_to_anthropic",
    "openai_request_to_anthropic",
    "openai_response_to_anthropic",
    "openai_usage_to_anthropic",
    "wants_usage",
]
