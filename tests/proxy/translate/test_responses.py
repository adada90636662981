"""Whole replies both ways: content, tool calls, stop reasons, ids and usage."""

from __future__ import annotations

from typing import Any

import pytest

from proxy.translate import (
    ToolNames,
    TranslationError,
    anthropic_response_to_openai,
    openai_response_to_anthropic,
)
from proxy.translate.content import RAW_ARGUMENTS_KEY


def openai_reply(
    message: dict[str, Any], finish_reason: str | None = "stop", usage: dict[str, Any] | None = None
) -> dict[str, Any]:
    return {
        "id": "chatcmpl-abc",
        "object": "chat.completion",
        "created": 1,
        "model": "llama",
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason}],
        "usage": usage or {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12},
    }


def test_text_reply_keeps_the_id_and_maps_usage() -> None:
    message = openai_response_to_anthropic(
        openai_reply(
            {"role": "assistant", "content": "Hello"},
            usage={
                "prompt_tokens": 100,
                "completion_tokens": 7,
                "total_tokens": 107,
                "prompt_tokens_details": {"cached_tokens": 80, "cache_write_tokens": 15},
            },
        ),
        tool_names=ToolNames(),
        model="claude-shown",
    )
    assert message == {
        "id": "chatcmpl-abc",
        "type": "message",
        "role": "assistant",
        "model": "claude-shown",
        "content": [{"type": "text", "text": "Hello"}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {
            "input_tokens": 5,
            "output_tokens": 7,
            "cache_creation_input_tokens": 15,
            "cache_read_input_tokens": 80,
        },
    }


def test_tool_calls_get_their_original_names_and_parsed_input() -> None:
    names = ToolNames()
    sent = names.to_openai("mcp__a.b__c")
    message = openai_response_to_anthropic(
        openai_reply(
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": sent, "arguments": '{"x": 1}'},
                    },
                    {
                        "id": "call_2",
                        "type": "function",
                        "function": {"name": "Other", "arguments": "not json"},
                    },
                    {"type": "function", "function": {"name": "Other", "arguments": ""}},
                ],
            },
            finish_reason="tool_calls",
        ),
        tool_names=names,
        model="m",
    )
    assert message["stop_reason"] == "tool_use"
    first, second, third = message["content"]
    assert first == {"type": "tool_use", "id": "call_1", "name": "mcp__a.b__c", "input": {"x": 1}}
    assert second["input"] == {RAW_ARGUMENTS_KEY: "not json"}
    assert third["input"] == {}
    assert third["id"].startswith("toolu_")


def test_tool_calls_finished_with_stop_are_still_tool_use() -> None:
    message = openai_response_to_anthropic(
        openai_reply(
            {
                "role": "assistant",
                "tool_calls": [
                    {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}
                ],
            },
            finish_reason="stop",
        ),
        tool_names=ToolNames(),
        model="m",
    )
    assert message["stop_reason"] == "tool_use"


@pytest.mark.parametrize(
    ("finish", "stop"),
    [
        ("stop", "end_turn"),
        ("length", "max_tokens"),
        ("content_filter", "refusal"),
        (None, "end_turn"),
        ("weird", "end_turn"),
    ],
)
def test_finish_reasons_map_to_stop_reasons(finish: str | None, stop: str) -> None:
    message = openai_response_to_anthropic(
        openai_reply({"role": "assistant", "content": "x"}, finish_reason=finish),
        tool_names=ToolNames(),
        model="m",
    )
    assert message["stop_reason"] == stop


def test_a_refusal_becomes_text() -> None:
    message = openai_response_to_anthropic(
        openai_reply(
            {"role": "assistant", "content": None, "refusal": "I can't help."}, "content_filter"
        ),
        tool_names=ToolNames(),
        model="m",
    )
    assert message["content"] == [{"type": "text", "text": "I can't help."}]
    assert message["stop_reason"] == "refusal"


@pytest.mark.parametrize(
    "body", [{"error": {"message": "boom"}}, {"choices": []}, [], {"choices": [1]}]
)
def test_a_reply_without_a_choice_is_a_502(body: Any) -> None:
    with pytest.raises(TranslationError) as caught:
        openai_response_to_anthropic(body, tool_names=ToolNames(), model="m")
    assert caught.value.status == 502
    assert caught.value.anthropic_type == "api_error"


def anthropic_message(
    content: list[dict[str, Any]], stop_reason: str | None = "end_turn"
) -> dict[str, Any]:
    return {
        "id": "msg_01",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-6",
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": {
            "input_tokens": 12,
            "cache_creation_input_tokens": 300,
            "cache_read_input_tokens": 4000,
            "output_tokens": 50,
            "output_tokens_details": {"thinking_tokens": 20},
        },
    }


def test_anthropic_reply_becomes_a_chat_completion() -> None:
    completion = anthropic_response_to_openai(
        anthropic_message(
            [
                {"type": "thinking", "thinking": "hmm", "signature": "s"},
                {"type": "text", "text": "Checking", "citations": None},
                {"type": "text", "text": " now."},
                {
                    "type": "tool_use",
                    "id": "toolu_9",
                    "name": "get_weather",
                    "input": {"city": "Oslo"},
                },
            ],
            stop_reason="tool_use",
        ),
        model="claude-requested",
        created=1700000000,
    )
    assert completion == {
        "id": "msg_01",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "claude-requested",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "Checking now.",
                    "refusal": None,
                    "tool_calls": [
                        {
                            "id": "toolu_9",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'},
                        }
                    ],
                },
                "logprobs": None,
                "finish_reason": "tool_calls",
            }
        ],
        "usage": {
            "prompt_tokens": 4312,
            "completion_tokens": 50,
            "total_tokens": 4362,
            "prompt_tokens_details": {"cached_tokens": 4000, "cache_write_tokens": 300},
            "completion_tokens_details": {"reasoning_tokens": 20},
        },
    }


@pytest.mark.parametrize(
    ("stop", "finish"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("pause_turn", "stop"),
        ("max_tokens", "length"),
        ("model_context_window_exceeded", "length"),
        ("refusal", "content_filter"),
        ("something_new", "stop"),
        (None, "stop"),
    ],
)
def test_stop_reasons_map_to_finish_reasons(stop: str | None, finish: str) -> None:
    completion = anthropic_response_to_openai(
        anthropic_message([{"type": "text", "text": "x"}], stop), created=1
    )
    assert completion["choices"][0]["finish_reason"] == finish
    assert completion["model"] == "claude-sonnet-4-6"


def test_tool_only_reply_has_null_content_and_empty_reply_has_empty_text() -> None:
    tool_only = anthropic_response_to_openai(
        anthropic_message([{"type": "tool_use", "id": "t", "name": "f", "input": {}}], "tool_use"),
        created=1,
    )
    assert tool_only["choices"][0]["message"]["content"] is None
    empty = anthropic_response_to_openai(anthropic_message([], "max_tokens"), created=1)
    assert empty["choices"][0]["message"]["content"] == ""
