"""OpenAI Chat Completions requests (the inbound OpenAI API) as Anthropic requests."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from proxy.translate import TranslationError, openai_request_to_anthropic, wants_usage
from proxy.translate.content import RAW_ARGUMENTS_KEY


def translate(**fields: Any) -> dict[str, Any]:
    body = {"model": "claude-sonnet-4-6", "messages": [{"role": "user", "content": "hi"}]}
    body.update(fields)
    return openai_request_to_anthropic(body, default_max_tokens=4096)


def test_system_and_developer_messages_are_hoisted_in_order() -> None:
    result = translate(
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "hi"},
            {"role": "developer", "content": [{"type": "text", "text": "Answer in French."}]},
            {"role": "user", "content": "again"},
        ]
    )
    assert result["system"] == [
        {"type": "text", "text": "Be brief."},
        {"type": "text", "text": "Answer in French."},
    ]
    assert result["messages"] == [
        {
            "role": "user",
            "content": [{"type": "text", "text": "hi"}, {"type": "text", "text": "again"}],
        }
    ]


def test_max_tokens_defaults_when_the_client_sends_none() -> None:
    assert translate()["max_tokens"] == 4096
    assert translate(max_tokens=50)["max_tokens"] == 50
    assert translate(max_completion_tokens=70, max_tokens=50)["max_tokens"] == 70


@pytest.mark.parametrize("value", [0, -1, "10", True])
def test_invalid_max_tokens_is_a_400(value: object) -> None:
    with pytest.raises(TranslationError) as caught:
        translate(max_tokens=value)
    assert caught.value.status == 400
    assert caught.value.param == "max_tokens"


def test_temperature_is_clamped_to_anthropics_range() -> None:
    assert translate(temperature=1.7)["temperature"] == 1
    assert translate(temperature=0.3)["temperature"] == 0.3
    assert translate(temperature=-2)["temperature"] == 0


def test_stop_becomes_a_list_of_stop_sequences() -> None:
    assert translate(stop="END")["stop_sequences"] == ["END"]
    assert translate(stop=["a", "b"])["stop_sequences"] == ["a", "b"]
    assert "stop_sequences" not in translate(stop=None)


def test_user_and_safety_identifier_become_metadata_user_id() -> None:
    assert translate(user="u-1")["metadata"] == {"user_id": "u-1"}
    assert translate(user="u-1", safety_identifier="s-1")["metadata"] == {"user_id": "s-1"}


def test_stream_is_kept_and_include_usage_is_read_by_the_caller() -> None:
    body = {"stream": True, "stream_options": {"include_usage": True}}
    assert translate(**body)["stream"] is True
    assert "stream_options" not in translate(**body)
    assert wants_usage(body) is True
    assert wants_usage({"stream": True}) is False


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("n", 2),
        ("logprobs", True),
        ("top_logprobs", 3),
        ("logit_bias", {"50256": -100}),
        ("audio", {"voice": "alloy", "format": "wav"}),
        ("modalities", ["text", "audio"]),
        ("functions", [{"name": "f"}]),
        ("function_call", "auto"),
        ("response_format", {"type": "json_object"}),
        ("reasoning_effort", "extreme"),
    ],
)
def test_unsupported_fields_are_refused_with_a_400_naming_them(field: str, value: object) -> None:
    with pytest.raises(TranslationError) as caught:
        translate(**{field: value})
    assert caught.value.status == 400
    assert caught.value.param == field
    body = orjson.loads(caught.value.openai_body())
    assert body["error"]["type"] == "invalid_request_error"
    assert body["error"]["param"] == field


def test_harmless_hints_are_dropped() -> None:
    result = translate(
        seed=1,
        presence_penalty=0.5,
        frequency_penalty=0.5,
        store=True,
        n=1,
        logprobs=False,
        metadata={"k": "v"},
        service_tier="auto",
        prompt_cache_key="x",
        verbosity="low",
    )
    assert set(result) == {"model", "messages", "max_tokens"}


def test_tools_and_tool_choice_are_mapped() -> None:
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather for a city",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
                "strict": True,
            },
        }
    ]
    result = translate(tools=tools, tool_choice="required", parallel_tool_calls=False)
    assert result["tools"] == [
        {
            "name": "get_weather",
            "description": "Weather for a city",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
            "strict": True,
        }
    ]
    assert result["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}
    named = {"type": "function", "function": {"name": "get_weather"}}
    assert translate(tools=tools, tool_choice=named)["tool_choice"] == {
        "type": "tool",
        "name": "get_weather",
    }
    assert translate(tools=tools, tool_choice="none")["tool_choice"] == {"type": "none"}
    assert "tool_choice" not in translate(tools=tools)


def test_a_tool_without_parameters_gets_an_empty_object_schema() -> None:
    result = translate(tools=[{"type": "function", "function": {"name": "now"}}])
    assert result["tools"][0]["input_schema"] == {"type": "object", "properties": {}}


def test_tool_results_are_grouped_into_one_user_message_before_its_text() -> None:
    result = translate(
        messages=[
            {"role": "user", "content": "weather in Paris and Rome?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "w", "arguments": '{"c":"Paris"}'},
                    },
                    {
                        "id": "call_2",
                        "type": "function",
                        "function": {"name": "w", "arguments": '{"c":"Rome"}'},
                    },
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
            {"role": "user", "content": "and be quick"},
            {
                "role": "tool",
                "tool_call_id": "call_2",
                "content": [{"type": "text", "text": "21C"}],
            },
        ],
        tools=[{"type": "function", "function": {"name": "w", "parameters": {"type": "object"}}}],
    )
    assert result["messages"][1] == {
        "role": "assistant",
        "content": [
            {"type": "tool_use", "id": "call_1", "name": "w", "input": {"c": "Paris"}},
            {"type": "tool_use", "id": "call_2", "name": "w", "input": {"c": "Rome"}},
        ],
    }
    assert result["messages"][2] == {
        "role": "user",
        "content": [
            {"type": "tool_result", "tool_use_id": "call_1", "content": "18C"},
            {"type": "tool_result", "tool_use_id": "call_2", "content": "21C"},
            {"type": "text", "text": "and be quick"},
        ],
    }


def test_history_with_tool_calls_but_no_tools_gets_stub_tools_that_cannot_be_called() -> None:
    result = translate(
        messages=[
            {"role": "user", "content": "hi"},
            {
                "role": "assistant",
                "tool_calls": [
                    {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}
                ],
            },
            {"role": "tool", "tool_call_id": "c", "content": "ok"},
        ]
    )
    assert [tool["name"] for tool in result["tools"]] == ["f"]
    assert result["tool_choice"] == {"type": "none"}


def test_malformed_history_arguments_are_kept_under_a_raw_key() -> None:
    result = translate(
        messages=[
            {"role": "user", "content": "hi"},
            {
                "role": "assistant",
                "tool_calls": [
                    {
                        "id": "c",
                        "type": "function",
                        "function": {"name": "f", "arguments": '{"a": 1'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "c", "content": "ok"},
        ]
    )
    assert result["messages"][1]["content"][0]["input"] == {RAW_ARGUMENTS_KEY: '{"a": 1'}


def test_images_from_data_and_https_urls() -> None:
    result = translate(
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "compare"},
                    {
                        "type": "image_url",
                        "image_url": {"url": "data:image/jpg;base64,/9j/AAA", "detail": "high"},
                    },
                    {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
                ],
            }
        ]
    )
    assert result["messages"][0]["content"][1:] == [
        {
            "type": "image",
            "source": {"type": "base64", "media_type": "image/jpeg", "data": "/9j/AAA"},
        },
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.png"}},
    ]


@pytest.mark.parametrize(
    "url", ["data:image/tiff;base64,AAAA", "data:image/png,rawbytes", "ftp://example.com/a.png"]
)
def test_unsupported_images_are_a_400(url: str) -> None:
    with pytest.raises(TranslationError):
        translate(
            messages=[
                {"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]}
            ]
        )


def test_audio_input_is_a_400() -> None:
    part = {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}
    with pytest.raises(TranslationError) as caught:
        translate(messages=[{"role": "user", "content": [part]}])
    assert "input_audio" in caught.value.message


def test_a_base64_pdf_file_becomes_a_document() -> None:
    part = {
        "type": "file",
        "file": {"filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBER"},
    }
    result = translate(messages=[{"role": "user", "content": [part]}])
    assert result["messages"][0]["content"] == [
        {
            "type": "document",
            "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBER"},
            "title": "a.pdf",
        }
    ]


def test_a_conversation_starting_with_the_assistant_gets_a_user_turn_first() -> None:
    result = translate(
        messages=[{"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "hi"}]
    )
    assert result["messages"][0] == {
        "role": "user",
        "content": [{"type": "text", "text": "Continue."}],
    }


def test_empty_text_is_left_out_and_a_final_prefill_loses_trailing_whitespace() -> None:
    result = translate(
        messages=[
            {
                "role": "user",
                "content": [{"type": "text", "text": "  "}, {"type": "text", "text": "go"}],
            },
            {"role": "assistant", "content": "The answer is "},
        ]
    )
    assert result["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "go"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "The answer is"}]},
    ]


def test_json_schema_response_format_becomes_output_config() -> None:
    schema = {
        "type": "object",
        "properties": {"a": {"type": "integer"}},
        "additionalProperties": False,
    }
    result = translate(
        response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
    )
    assert result["output_config"] == {"format": {"type": "json_schema", "schema": schema}}
    assert "output_config" not in translate(response_format={"type": "text"})


def test_reasoning_effort_becomes_a_thinking_budget_with_room_for_the_answer() -> None:
    result = translate(reasoning_effort="medium")
    assert result["thinking"] == {"type": "enabled", "budget_tokens": 8192}
    assert result["max_tokens"] == 4096 + 8192


def test_reasoning_budget_stays_within_half_of_the_clients_limit() -> None:
    assert translate(reasoning_effort="high", max_completion_tokens=10000)["thinking"] == {
        "type": "enabled",
        "budget_tokens": 5000,
    }
    assert "thinking" not in translate(reasoning_effort="high", max_completion_tokens=2000)


@pytest.mark.parametrize(
    "fields",
    [
        {"temperature": 0.2},
        {"top_k": 5},
        {"tool_choice": "required", "tools": [{"type": "function", "function": {"name": "f"}}]},
    ],
)
def test_no_thinking_when_the_request_sets_what_anthropic_refuses_with_it(
    fields: dict[str, Any],
) -> None:
    assert "thinking" not in translate(reasoning_effort="low", **fields)


def test_no_thinking_in_the_middle_of_a_tool_loop() -> None:
    result = translate(
        reasoning_effort="low",
        tools=[{"type": "function", "function": {"name": "f"}}],
        messages=[
            {"role": "user", "content": "hi"},
            {
                "role": "assistant",
                "tool_calls": [
                    {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}
                ],
            },
            {"role": "tool", "tool_call_id": "c", "content": "ok"},
        ],
    )
    assert "thinking" not in result


def test_an_explicit_thinking_object_wins_over_reasoning_effort() -> None:
    thinking = {"type": "adaptive"}
    assert translate(reasoning_effort="low", thinking=thinking)["thinking"] == thinking


@pytest.mark.parametrize(
    "messages",
    [
        [],
        [{"role": "system", "content": "only a system prompt"}],
        [{"role": "function", "name": "f", "content": "x"}],
        [{"role": "user", "content": 5}],
    ],
)
def test_malformed_conversations_are_a_400(messages: list[dict[str, Any]]) -> None:
    with pytest.raises(TranslationError) as caught:
        translate(messages=messages)
    assert caught.value.status == 400
