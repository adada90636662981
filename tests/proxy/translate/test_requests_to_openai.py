"""Anthropic requests (Claude Code, the anthropic SDK) for OpenAI-compatible upstreams."""

from __future__ import annotations

import hashlib
import re
from typing import Any

import pytest

from proxy.translate import ToolNames, TranslationError, anthropic_request_to_openai


def translate(**fields: Any) -> tuple[dict[str, Any], ToolNames]:
    body = {
        "model": "claude-x",
        "max_tokens": 1000,
        "messages": [{"role": "user", "content": "hi"}],
    }
    body.update(fields)
    return anthropic_request_to_openai(body, model="llama-3.3-70b")


def test_the_upstream_model_and_max_tokens_are_sent() -> None:
    result, _ = translate()
    assert result == {
        "model": "llama-3.3-70b",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 1000,
    }


def test_max_tokens_field_and_cap_are_the_callers_choice() -> None:
    body = {"model": "c", "max_tokens": 32000, "messages": [{"role": "user", "content": "hi"}]}
    result, _ = anthropic_request_to_openai(
        body, model="gpt-x", max_tokens_field="max_completion_tokens", max_output_tokens=8192
    )
    assert result["max_completion_tokens"] == 8192
    assert "max_tokens" not in result


def test_system_blocks_and_system_role_messages_become_one_leading_system_message() -> None:
    result, _ = translate(
        system=[
            {"type": "text", "text": "x-anthropic-billing-header: cc_version=2.1.332.1c9;"},
            {
                "type": "text",
                "text": "You are a Claude agent.",
                "cache_control": {"type": "ephemeral"},
            },
            {"type": "text", "text": "Long prompt."},
        ],
        messages=[
            {"role": "user", "content": [{"type": "text", "text": "say hello"}]},
            {
                "role": "system",
                "content": [
                    {"type": "text", "text": "env info", "cache_control": {"type": "ephemeral"}}
                ],
                "output_config": {"effort": "medium"},
            },
        ],
    )
    assert result["messages"] == [
        {"role": "system", "content": "You are a Claude agent.\n\nLong prompt.\n\nenv info"},
        {"role": "user", "content": "say hello"},
    ]


def test_tool_results_become_tool_messages_before_the_users_text() -> None:
    result, _ = translate(
        messages=[
            {"role": "user", "content": "list files"},
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "I should run ls", "signature": "sig"},
                    {"type": "text", "text": "Running ls."},
                    {
                        "type": "tool_use",
                        "id": "toolu_1",
                        "name": "Bash",
                        "input": {"command": "ls"},
                    },
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": "a.py\nb.py"},
                    {"type": "text", "text": "now count them"},
                ],
            },
        ]
    )
    assert result["messages"][1:] == [
        {
            "role": "assistant",
            "content": "Running ls.",
            "tool_calls": [
                {
                    "id": "toolu_1",
                    "type": "function",
                    "function": {"name": "Bash", "arguments": '{"command":"ls"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "toolu_1", "content": "a.py\nb.py"},
        {"role": "user", "content": "now count them"},
    ]


def test_an_error_result_is_prefixed_and_its_images_move_to_a_user_message() -> None:
    result, _ = translate(
        messages=[
            {"role": "user", "content": "shot"},
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": "t", "name": "Shot", "input": {}}],
            },
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "t",
                        "is_error": True,
                        "content": [
                            {"type": "text", "text": "partial"},
                            {
                                "type": "image",
                                "source": {
                                    "type": "base64",
                                    "media_type": "image/png",
                                    "data": "iVBOR",
                                },
                            },
                        ],
                    }
                ],
            },
        ]
    )
    assert result["messages"][2:] == [
        {"role": "tool", "tool_call_id": "t", "content": "Error: partial"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Images returned by tool call t:"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBOR"}},
            ],
        },
    ]


def test_an_assistant_turn_with_only_thinking_is_left_out() -> None:
    result, _ = translate(
        messages=[
            {"role": "user", "content": "a"},
            {"role": "assistant", "content": [{"type": "redacted_thinking", "data": "xyz"}]},
            {"role": "user", "content": "b"},
        ]
    )
    assert [m["role"] for m in result["messages"]] == ["user", "user"]


def test_mcp_tool_names_are_made_valid_and_restorable() -> None:
    long_name = "mcp__github-enterprise-server__create_pull_request_review_comment_reply_v2"
    result, names = translate(
        tools=[
            {"name": "mcp__my.server__read/file", "input_schema": {"type": "object"}},
            {"name": long_name, "description": "d", "input_schema": {"type": "object"}},
            {"name": "Bash", "input_schema": {"type": "object"}},
        ],
        tool_choice={"type": "tool", "name": "mcp__my.server__read/file"},
    )
    sent = [tool["function"]["name"] for tool in result["tools"]]
    assert all(re.fullmatch(r"[a-zA-Z0-9_-]{1,64}", name) for name in sent)
    assert sent[2] == "Bash"
    assert [names.original(name) for name in sent] == [
        "mcp__my.server__read/file",
        long_name,
        "Bash",
    ]
    assert result["tool_choice"] == {"type": "function", "function": {"name": sent[0]}}


def test_server_tools_are_dropped_and_deferred_tools_kept() -> None:
    result, _ = translate(
        tools=[
            {"type": "web_search_20250305", "name": "web_search", "max_uses": 3},
            {"type": "bash_20250124", "name": "bash"},
            {"name": "Later", "input_schema": {"type": "object"}, "defer_loading": True},
        ]
    )
    assert [tool["function"]["name"] for tool in result["tools"]] == ["Later"]


def test_tool_references_from_tool_search_name_the_callable_tool() -> None:
    result, names = translate(
        tools=[{"name": "mcp__a.b__c", "input_schema": {"type": "object"}, "defer_loading": True}],
        messages=[
            {"role": "user", "content": "find a tool"},
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": "t", "name": "ToolSearch", "input": {}}],
            },
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "t",
                        "content": [{"type": "tool_reference", "tool_name": "mcp__a.b__c"}],
                    }
                ],
            },
        ],
    )
    assert result["messages"][2]["content"] == f"Tool available: {names.to_openai('mcp__a.b__c')}"


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ({"type": "auto"}, {"tool_choice": "auto"}),
        ({"type": "any"}, {"tool_choice": "required"}),
        ({"type": "none"}, {"tool_choice": "none"}),
        (
            {"type": "auto", "disable_parallel_tool_use": True},
            {"tool_choice": "auto", "parallel_tool_calls": False},
        ),
    ],
)
def test_tool_choice_is_mapped(choice: dict[str, Any], expected: dict[str, Any]) -> None:
    result, _ = translate(
        tools=[{"name": "f", "input_schema": {"type": "object"}}], tool_choice=choice
    )
    assert {k: result[k] for k in expected} == expected


def test_streaming_always_asks_the_upstream_for_usage() -> None:
    result, _ = translate(stream=True)
    assert result["stream"] is True
    assert result["stream_options"] == {"include_usage": True}


def test_sampling_stop_and_user_are_mapped() -> None:
    user_id = '{"device_id":"' + "a" * 64 + '","account_uuid":"","session_id":"s"}'
    result, _ = translate(
        temperature=0.5, top_p=0.9, top_k=40, stop_sequences=["###"], metadata={"user_id": user_id}
    )
    assert result["temperature"] == 0.5
    assert result["top_p"] == 0.9
    assert "top_k" not in result
    assert result["stop"] == ["###"]
    assert result["user"] == hashlib.sha256(user_id.encode()).hexdigest()
    short, _ = translate(metadata={"user_id": "dev-7"})
    assert short["user"] == "dev-7"


def test_thinking_effort_and_other_anthropic_only_fields_are_dropped() -> None:
    result, _ = translate(
        thinking={"type": "adaptive", "display": "omitted"},
        context_management={"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
        output_config={"effort": "high"},
        cache_control={"type": "ephemeral"},
        service_tier="auto",
        safeguards={"x": 1},
    )
    assert set(result) == {"model", "messages", "max_tokens"}


def test_structured_output_becomes_response_format() -> None:
    schema = {"type": "object", "properties": {}, "additionalProperties": False}
    result, _ = translate(output_config={"format": {"type": "json_schema", "schema": schema}})
    assert result["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "response", "schema": schema, "strict": True},
    }


def test_documents_become_file_or_text_parts() -> None:
    result, _ = translate(
        messages=[
            {
                "role": "user",
                "content": [
                    {
                        "type": "document",
                        "title": "spec.pdf",
                        "source": {
                            "type": "base64",
                            "media_type": "application/pdf",
                            "data": "JVBER",
                        },
                    },
                    {
                        "type": "document",
                        "source": {"type": "text", "media_type": "text/plain", "data": "plain"},
                    },
                ],
            }
        ]
    )
    assert result["messages"][0]["content"] == [
        {
            "type": "file",
            "file": {"filename": "spec.pdf", "file_data": "data:application/pdf;base64,JVBER"},
        },
        {"type": "text", "text": "plain"},
    ]


@pytest.mark.parametrize(
    "fields",
    [
        {"max_tokens": None},
        {"messages": []},
        {"messages": [{"role": "tool", "content": "x"}]},
        {"mcp_servers": [{"type": "url", "url": "https://mcp.example.com", "name": "x"}]},
        {
            "messages": [
                {
                    "role": "user",
                    "content": [{"type": "image", "source": {"type": "file", "file_id": "f"}}],
                }
            ]
        },
    ],
)
def test_what_cannot_be_sent_is_a_400(fields: dict[str, Any]) -> None:
    with pytest.raises(TranslationError) as caught:
        translate(**fields)
    assert caught.value.status == 400
