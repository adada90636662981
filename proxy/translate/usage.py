"""Token usage between the two APIs, exactly (PROTOCOLS.md 3.4).

Anthropic's `input_tokens` excludes cached tokens; OpenAI's `prompt_tokens` includes them:

    prompt_tokens = input_tokens + cache_creation_input_tokens + cache_read_input_tokens
    prompt_tokens_details.cached_tokens = cache_read_input_tokens
    prompt_tokens_details.cache_write_tokens = cache_creation_input_tokens
    completion_tokens = output_tokens  (thinking included on both sides; a non-zero
    thinking/reasoning breakdown is carried over as output_tokens_details.thinking_tokens /
    completion_tokens_details.reasoning_tokens)

Going back, `cache_write_tokens` is subtracted from `prompt_tokens` as well as `cached_tokens`:
both are parts of the prompt (OpenAI SDK docstrings), so the three Anthropic numbers always
add up to `prompt_tokens` and nothing is billed twice.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypedDict


class AnthropicUsage(TypedDict, total=False):
    input_tokens: int
    output_tokens: int
    cache_creation_input_tokens: int
    cache_read_input_tokens: int
    output_tokens_details: dict[str, int]


class OpenAIUsage(TypedDict, total=False):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: dict[str, int]
    completion_tokens_details: dict[str, int]


def count(value: object) -> int:
    """A token count from JSON: anything but a non-negative integer counts as 0."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return 0


def anthropic_usage_to_openai(usage: Mapping[str, Any]) -> OpenAIUsage:
    uncached = count(usage.get("input_tokens"))
    written = count(usage.get("cache_creation_input_tokens"))
    read = count(usage.get("cache_read_input_tokens"))
    output = count(usage.get("output_tokens"))
    prompt = uncached + written + read
    result = OpenAIUsage(
        prompt_tokens=prompt,
        completion_tokens=output,
        total_tokens=prompt + output,
        prompt_tokens_details={"cached_tokens": read, "cache_write_tokens": written},
    )
    details = usage.get("output_tokens_details")
    thinking = count(details.get("thinking_tokens")) if isinstance(details, Mapping) else 0
    if thinking:
        result["completion_tokens_details"] = {"reasoning_tokens": thinking}
    return result


def openai_usage_to_anthropic(usage: Mapping[str, Any]) -> AnthropicUsage:
    prompt = count(usage.get("prompt_tokens"))
    details = usage.get("prompt_tokens_details")
    details = details if isinstance(details, Mapping) else {}
    # DeepSeek reports cache hits at the top level instead.
    read = count(details.get("cached_tokens", usage.get("prompt_cache_hit_tokens")))
    written = count(details.get("cache_write_tokens"))
    # A server whose parts exceed the whole is trusted for the whole (what it bills).
    read = min(read, prompt)
    written = min(written, prompt - read)
    result = AnthropicUsage(
        input_tokens=prompt - read - written,
        output_tokens=count(usage.get("completion_tokens")),
        cache_creation_input_tokens=written,
        cache_read_input_tokens=read,
    )
    completion_details = usage.get("completion_tokens_details")
    reasoning = (
        count(completion_details.get("reasoning_tokens"))
        if isinstance(completion_details, Mapping)
        else 0
    )
    if reasoning:
        result["output_tokens_details"] = {"thinking_tokens": reasoning}
    return result


def zero_anthropic_usage() -> AnthropicUsage:
    return AnthropicUsage(
        input_tokens=0, output_tokens=0, cache_creation_input_tokens=0, cache_read_input_tokens=0
    )
