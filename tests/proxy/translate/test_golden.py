"""Golden tests: payloads in the providers' documented wire shapes, and what each becomes.

The fixtures under golden/ follow PROTOCOLS.md and the SDK types (OpenAI's stream chunks with
`obfuscation`, `service_tier`, the include_usage chunk; Anthropic's thinking + signature,
`ping`, tool_use with an empty first `input_json_delta`; Claude Code's request shape from
CLIENTS.md). The expected files were reviewed by hand against those tables.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from anthropic.types import Message, RawMessageStreamEvent
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from pydantic import TypeAdapter

from proxy.metering import UsageTally
from proxy.translate import (
    AnthropicStreamToOpenAI,
    OpenAIStreamToAnthropic,
    ToolNames,
    anthropic_error_to_openai,
    anthropic_request_to_openai,
    anthropic_response_to_openai,
    openai_error_to_anthropic,
    openai_request_to_anthropic,
    openai_response_to_anthropic,
)
from tests.proxy.translate.sse_helpers import anthropic_events, feed_in_pieces, openai_payloads

GOLDEN = Path(__file__).parent / "golden"


def load(name: str) -> Any:
    return orjson.loads((GOLDEN / name).read_bytes())


def claude_code_tool_names() -> ToolNames:
    """The map the gateway built when it translated the request these replies answer."""
    names = ToolNames()
    names.to_openai("mcp__weather.service__get_forecast")
    names.to_openai("mcp__my.docs__search")
    return names


def test_claude_code_request_for_an_openai_upstream() -> None:
    body, names = anthropic_request_to_openai(load("claude_code_request.json"), model="gpt-4.1")
    assert body == load("claude_code_request.openai.json")
    assert names.renamed() == {"mcp__repo.tools__read_file": "mcp__repo_tools__read_file_f14ce482"}


def test_openai_sdk_request_for_claude() -> None:
    body = openai_request_to_anthropic(load("openai_sdk_request.json"), default_max_tokens=4096)
    assert body == load("openai_sdk_request.anthropic.json")


@pytest.mark.parametrize("crlf", [False, True])
def test_openai_stream_with_parallel_tool_calls_and_usage_chunk(crlf: bool) -> None:
    raw = (GOLDEN / "openai_stream_text_and_tool_calls.sse").read_bytes()
    if crlf:
        raw = raw.replace(b"\n", b"\r\n")
    converter = OpenAIStreamToAnthropic(claude_code_tool_names(), "claude-opus-5-5")
    out = feed_in_pieces(converter, raw, list(range(0, len(raw), 97)))
    assert anthropic_events(out) == load("openai_stream_text_and_tool_calls.anthropic.json")


def test_usage_tally_meters_the_translated_openai_stream() -> None:
    raw = (GOLDEN / "openai_stream_text_and_tool_calls.sse").read_bytes()
    converter = OpenAIStreamToAnthropic(claude_code_tool_names(), "claude-opus-5-5")
    tally = UsageTally()
    for start in range(0, len(raw), 61):
        tally.feed_sse(converter.feed(raw[start : start + 61]))
    tally.feed_sse(converter.close())
    usage = tally.usage()
    # prompt_tokens 2316 of which 1920 cached; completion 61.
    assert (usage.input_tokens, usage.cache_read_tokens, usage.output_tokens) == (396, 1920, 61)
    assert usage.cache_write_5m_tokens == usage.cache_write_1h_tokens == 0
    assert tally.completed
    assert tally.stop_reason == "tool_use"
    assert tally.upstream_message_id == "chatcmpl-CxR2vJm4kq8Yt1ZpWbN7uH3dLs0Ae"


def test_anthropic_stream_with_thinking_and_tool_use() -> None:
    raw = (GOLDEN / "anthropic_stream_thinking_tool_use.sse").read_bytes()
    converter = AnthropicStreamToOpenAI(
        include_usage=True, model="claude-sonnet-4-6", created=1764151200
    )
    out = feed_in_pieces(converter, raw, list(range(0, len(raw), 53)))
    assert openai_payloads(out) == load("anthropic_stream_thinking_tool_use.openai.json")


def test_anthropic_stream_without_include_usage_has_no_usage_at_all() -> None:
    raw = (GOLDEN / "anthropic_stream_thinking_tool_use.sse").read_bytes()
    converter = AnthropicStreamToOpenAI(
        include_usage=False, model="claude-sonnet-4-6", created=1764151200
    )
    payloads = openai_payloads(converter.feed(raw) + converter.close())
    expected = [
        p
        for p in load("anthropic_stream_thinking_tool_use.openai.json")
        if p == "[DONE]" or p["choices"]
    ]
    for payload in expected:
        if isinstance(payload, dict):
            del payload["usage"]
    assert payloads == expected


def test_openai_reply_with_tool_calls() -> None:
    message = openai_response_to_anthropic(
        load("openai_response_tool_calls.json"),
        tool_names=claude_code_tool_names(),
        model="claude-opus-5-5",
    )
    assert message == load("openai_response_tool_calls.anthropic.json")


def test_anthropic_reply_with_thinking_and_tool_use() -> None:
    completion = anthropic_response_to_openai(
        load("anthropic_response_tool_use.json"), created=1764151260
    )
    assert completion == load("anthropic_response_tool_use.openai.json")


@pytest.mark.parametrize(
    "case", load("errors.json"), ids=lambda c: f"{c['direction']}-{c['status']}"
)
def test_error_replies(case: dict[str, Any]) -> None:
    body = orjson.dumps(case["body"])
    if case["direction"] == "openai_to_anthropic":
        status, converted, error_type = openai_error_to_anthropic(case["status"], body)
        assert error_type == case["expected_body"]["error"]["type"]
    else:
        status, converted = anthropic_error_to_openai(case["status"], body)
    assert status == case["expected_status"]
    assert orjson.loads(converted) == case["expected_body"]


def test_openai_mid_stream_error_becomes_an_anthropic_error_event() -> None:
    case = load("stream_errors.json")["openai_mid_stream_error"]
    converter = OpenAIStreamToAnthropic(ToolNames(), "claude-x")
    out = converter.feed(case["upstream"].encode()) + converter.close()
    assert anthropic_events(out) == case["expected_events"]
    tally = UsageTally()
    tally.feed_sse(out)
    assert tally.error_type == "api_error"
    assert not tally.completed


def test_anthropic_mid_stream_error_becomes_an_openai_error_chunk() -> None:
    case = load("stream_errors.json")["anthropic_mid_stream_error"]
    converter = AnthropicStreamToOpenAI(include_usage=False, model="claude-sonnet-4-6", created=1)
    out = converter.feed(case["upstream"].encode()) + converter.close()
    assert openai_payloads(out) == case["expected_payloads"]


def test_translated_replies_validate_against_the_sdk_types() -> None:
    message = Message.model_validate(load("openai_response_tool_calls.anthropic.json"))
    assert message.usage.cache_read_input_tokens == 8960
    completion = ChatCompletion.model_validate(load("anthropic_response_tool_use.openai.json"))
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == 2069
    for payload in load("anthropic_stream_thinking_tool_use.openai.json")[:-1]:
        ChatCompletionChunk.model_validate(payload)
    for event in load("openai_stream_text_and_tool_calls.anthropic.json"):
        TypeAdapter(RawMessageStreamEvent).validate_python(event)
