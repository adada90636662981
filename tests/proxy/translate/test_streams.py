"""Stream converters: event order, the end of a stream, errors, and what the SDKs make of them.

The SDK tests run the real `anthropic` and `openai` clients (which use httpx2) over an
httpx2.MockTransport, without any network, whose body is the converter's output.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anthropic
import httpx2
import openai
import orjson
import pytest

from proxy.metering import UsageTally
from proxy.translate import AnthropicStreamToOpenAI, OpenAIStreamToAnthropic, ToolNames
from proxy.translate.content import RAW_ARGUMENTS_KEY
from tests.proxy.translate.sse_helpers import (
    anthropic_events,
    anthropic_stream,
    openai_payloads,
    openai_stream,
)

GOLDEN = Path(__file__).parent / "golden"


def chunk(
    delta: dict[str, Any] | None = None,
    finish_reason: str | None = None,
    usage: dict[str, Any] | None = None,
    choices: bool = True,
) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
    }
    payload["choices"] = (
        [{"index": 0, "delta": delta or {}, "finish_reason": finish_reason}] if choices else []
    )
    payload["usage"] = usage
    return payload


def to_anthropic(raw: bytes, names: ToolNames | None = None) -> list[dict[str, Any]]:
    converter = OpenAIStreamToAnthropic(names or ToolNames(), "claude-x")
    return anthropic_events(converter.feed(raw) + converter.close())


def kinds(events: list[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in events]


# --- OpenAI upstream -> Anthropic client ----------------------------------------------------


def test_text_only_stream_is_one_text_block() -> None:
    events = to_anthropic(
        openai_stream(
            [
                chunk({"role": "assistant", "content": ""}),
                chunk({"content": "Hel"}),
                chunk({"content": "lo"}),
                chunk(finish_reason="stop"),
                chunk(
                    choices=False,
                    usage={"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11},
                ),
            ]
        )
    )
    assert kinds(events) == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert events[-2]["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    assert events[-2]["usage"]["input_tokens"] == 9


def test_interleaved_fragments_of_parallel_calls_are_reassembled() -> None:
    names = ToolNames()
    events = to_anthropic(
        openai_stream(
            [
                chunk(
                    {
                        "tool_calls": [
                            {"index": 0, "id": "a", "function": {"name": "f", "arguments": '{"x"'}}
                        ]
                    }
                ),
                chunk(
                    {
                        "tool_calls": [
                            {"index": 1, "id": "b", "function": {"name": "g", "arguments": '{"y"'}}
                        ]
                    }
                ),
                chunk({"tool_calls": [{"index": 0, "function": {"arguments": ": 1}"}}]}),
                chunk({"tool_calls": [{"index": 1, "function": {"arguments": ": 2}"}}]}),
                chunk(finish_reason="tool_calls"),
            ]
        ),
        names,
    )
    starts = [e["content_block"] for e in events if e["type"] == "content_block_start"]
    deltas = [e["delta"]["partial_json"] for e in events if e["type"] == "content_block_delta"]
    assert [(b["id"], b["name"]) for b in starts] == [("a", "f"), ("b", "g")]
    assert deltas == ['{"x":1}', '{"y":2}']


def test_malformed_arguments_still_give_valid_json() -> None:
    events = to_anthropic(
        openai_stream(
            [
                chunk(
                    {
                        "tool_calls": [
                            {"index": 0, "id": "a", "function": {"name": "f", "arguments": "{oops"}}
                        ]
                    }
                ),
                chunk(finish_reason="tool_calls"),
            ]
        )
    )
    delta = next(e for e in events if e["type"] == "content_block_delta")
    assert delta["delta"]["partial_json"] == orjson.dumps({RAW_ARGUMENTS_KEY: "{oops"}).decode()


def test_text_after_a_tool_call_follows_the_tool_block() -> None:
    events = to_anthropic(
        openai_stream(
            [
                chunk(
                    {
                        "tool_calls": [
                            {"index": 0, "id": "a", "function": {"name": "f", "arguments": "{}"}}
                        ]
                    }
                ),
                chunk({"content": "done"}),
                chunk(finish_reason="tool_calls"),
            ]
        )
    )
    starts = [e["content_block"]["type"] for e in events if e["type"] == "content_block_start"]
    assert starts == ["tool_use", "text"]


def test_a_stream_without_done_is_finished_when_it_had_a_finish_reason() -> None:
    events = to_anthropic(
        openai_stream([chunk({"content": "x"}), chunk(finish_reason="length")], done=False)
    )
    assert kinds(events)[-2:] == ["message_delta", "message_stop"]
    assert events[-2]["delta"]["stop_reason"] == "max_tokens"


def test_a_stream_cut_short_ends_in_an_error_not_a_stop() -> None:
    usage = {"prompt_tokens": 30, "completion_tokens": 4, "total_tokens": 34}
    raw = openai_stream([chunk({"content": "partial"}, usage=usage)], done=False)
    converter = OpenAIStreamToAnthropic(ToolNames(), "claude-x")
    out = converter.feed(raw) + converter.close()
    events = anthropic_events(out)
    assert kinds(events)[-2:] == ["message_delta", "error"]
    assert events[-2]["delta"]["stop_reason"] is None
    assert events[-1]["error"]["type"] == "api_error"
    assert "message_stop" not in kinds(events)
    tally = UsageTally()
    tally.feed_sse(out)
    assert (tally.usage().input_tokens, tally.usage().output_tokens) == (30, 4)
    assert not tally.completed


def test_an_empty_upstream_sends_nothing_until_closed() -> None:
    converter = OpenAIStreamToAnthropic(ToolNames(), "claude-x")
    assert converter.feed(b": keep-alive\n\n") == b""
    assert not converter.started
    events = anthropic_events(converter.close())
    assert kinds(events) == ["error"]


def test_a_named_error_event_from_a_compatible_server_ends_the_stream() -> None:
    raw = openai_stream([chunk({"content": "a"})], done=False)
    raw += b'event: error\ndata: {"message": "model unloaded"}\n\n'
    events = to_anthropic(raw)
    assert events[-1] == {
        "type": "error",
        "error": {"type": "api_error", "message": "model unloaded"},
    }


def test_keep_alive_comments_become_pings_once_started() -> None:
    raw = openai_stream([chunk({"content": "a"})], done=False) + b": OPENROUTER PROCESSING\n\n"
    converter = OpenAIStreamToAnthropic(ToolNames(), "claude-x")
    assert kinds(anthropic_events(converter.feed(raw)))[-1] == "ping"


def test_usage_seen_says_whether_the_upstream_reported_usage() -> None:
    converter = OpenAIStreamToAnthropic(ToolNames(), "claude-x")
    converter.feed(openai_stream([chunk({"content": "a"}), chunk(finish_reason="stop")]))
    assert converter.finished
    assert not converter.usage_seen


def test_groq_usage_in_x_groq_is_read() -> None:
    final = chunk(finish_reason="stop")
    final["x_groq"] = {
        "id": "req_1",
        "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6},
    }
    events = to_anthropic(openai_stream([chunk({"content": "a"}), final]))
    assert events[-2]["usage"]["input_tokens"] == 5


def test_anthropic_sdk_reads_the_translated_stream() -> None:
    names = ToolNames()
    names.to_openai("mcp__weather.service__get_forecast")
    converter = OpenAIStreamToAnthropic(names, "claude-opus-5-5")
    raw = (GOLDEN / "openai_stream_text_and_tool_calls.sse").read_bytes()
    body = converter.feed(raw) + converter.close()

    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, content=body, headers={"content-type": "text/event-stream"})

    client = anthropic.Anthropic(
        api_key="test",
        base_url="http://127.0.0.1:9",
        http_client=httpx2.Client(transport=httpx2.MockTransport(handler)),
    )
    with client.messages.stream(
        model="claude-opus-5-5", max_tokens=100, messages=[{"role": "user", "content": "hi"}]
    ) as stream:
        message = stream.get_final_message()
    assert message.stop_reason == "tool_use"
    assert message.content[0].type == "text"
    assert message.content[0].text == "I'll check both cities. ✓"
    tools = [block for block in message.content if block.type == "tool_use"]
    assert [(t.name, t.input) for t in tools] == [
        ("mcp__weather.service__get_forecast", {"city": "Oslo", "days": 2}),
        ("mcp__weather.service__get_forecast", {"city": "Rome"}),
    ]
    assert message.usage.input_tokens == 396
    assert message.usage.cache_read_input_tokens == 1920
    assert message.usage.output_tokens == 61


# --- Anthropic upstream -> OpenAI client ----------------------------------------------------


def anthropic_events_for(
    *blocks: tuple[dict[str, Any], list[dict[str, Any]]],
    stop_reason: str = "end_turn",
    usage: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = [
        {
            "type": "message_start",
            "message": {
                "id": "msg_1",
                "type": "message",
                "role": "assistant",
                "model": "claude",
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {"input_tokens": 10, "cache_read_input_tokens": 5, "output_tokens": 1},
            },
        }
    ]
    for index, (block, deltas) in enumerate(blocks):
        events.append({"type": "content_block_start", "index": index, "content_block": block})
        events.extend({"type": "content_block_delta", "index": index, "delta": d} for d in deltas)
        events.append({"type": "content_block_stop", "index": index})
    events.append(
        {
            "type": "message_delta",
            "delta": {"stop_reason": stop_reason, "stop_sequence": None},
            "usage": usage or {"output_tokens": 7},
        }
    )
    events.append({"type": "message_stop"})
    return events


def to_openai(raw: bytes, include_usage: bool = True) -> list[Any]:
    converter = AnthropicStreamToOpenAI(include_usage=include_usage, model="claude", created=1)
    return openai_payloads(converter.feed(raw) + converter.close())


def test_tool_call_indexes_are_ordinals_not_block_indexes() -> None:
    raw = anthropic_stream(
        anthropic_events_for(
            ({"type": "text", "text": ""}, [{"type": "text_delta", "text": "hi"}]),
            (
                {"type": "tool_use", "id": "t1", "name": "a", "input": {}},
                [{"type": "input_json_delta", "partial_json": "{}"}],
            ),
            (
                {"type": "tool_use", "id": "t2", "name": "b", "input": {}},
                [{"type": "input_json_delta", "partial_json": '{"k":1}'}],
            ),
            stop_reason="tool_use",
        )
    )
    calls = [
        call
        for p in to_openai(raw)
        if isinstance(p, dict) and p["choices"]
        for call in p["choices"][0]["delta"].get("tool_calls", [])
    ]
    assert [c["index"] for c in calls] == [0, 0, 1, 1]
    assert [c.get("id") for c in calls] == ["t1", None, "t2", None]


def test_usage_chunk_uses_the_last_cumulative_values() -> None:
    events = anthropic_events_for(
        ({"type": "text", "text": ""}, [{"type": "text_delta", "text": "x"}])
    )
    events.insert(
        -2, {"type": "message_delta", "delta": {"stop_reason": None}, "usage": {"output_tokens": 3}}
    )
    events[-2]["usage"] = {"output_tokens": 9, "cache_creation_input_tokens": 2}
    payloads = to_openai(anthropic_stream(events))
    assert payloads[-1] == "[DONE]"
    assert payloads[-2]["choices"] == []
    assert payloads[-2]["usage"] == {
        "prompt_tokens": 17,
        "completion_tokens": 9,
        "total_tokens": 26,
        "prompt_tokens_details": {"cached_tokens": 5, "cache_write_tokens": 2},
    }


def test_a_stream_cut_before_the_stop_reason_ends_in_an_error_chunk() -> None:
    events = anthropic_events_for(
        ({"type": "text", "text": ""}, [{"type": "text_delta", "text": "x"}])
    )
    payloads = to_openai(anthropic_stream(events[:4]))
    assert payloads[-1]["error"]["type"] == "server_error"
    assert "[DONE]" not in payloads


def test_a_stream_cut_after_the_stop_reason_is_finished() -> None:
    events = anthropic_events_for(
        ({"type": "text", "text": ""}, [{"type": "text_delta", "text": "x"}])
    )
    payloads = to_openai(anthropic_stream(events[:-1]))
    assert payloads[-1] == "[DONE]"
    assert payloads[-3]["choices"][0]["finish_reason"] == "stop"


def test_openai_sdk_reads_the_translated_stream() -> None:
    converter = AnthropicStreamToOpenAI(
        include_usage=True, model="claude-sonnet-4-6", created=1764151200
    )
    raw = (GOLDEN / "anthropic_stream_thinking_tool_use.sse").read_bytes()
    body = converter.feed(raw) + converter.close()

    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, content=body, headers={"content-type": "text/event-stream"})

    client = openai.OpenAI(
        api_key="test",
        base_url="http://127.0.0.1:9/v1",
        http_client=httpx2.Client(transport=httpx2.MockTransport(handler)),
    )
    with client.chat.completions.stream(
        model="claude-sonnet-4-6",
        messages=[{"role": "user", "content": "hi"}],
        stream_options={"include_usage": True},
    ) as stream:
        completion = stream.get_final_completion()
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == "Let me look that up for you."
    assert choice.message.tool_calls is not None
    call = choice.message.tool_calls[0]
    assert (call.id, call.function.name) == ("toolu_01T1x1fJ34qAmk2tNTrN7Up6", "get_weather")
    assert call.function.arguments == '{"location": "Paris, France", "unit": "celsius"}'
    usage = completion.usage
    assert usage is not None
    assert usage.prompt_tokens_details is not None
    assert usage.prompt_tokens == 412 + 1536 + 20480
    assert usage.prompt_tokens_details.cached_tokens == 20480


def test_openai_sdk_raises_on_a_translated_stream_error() -> None:
    raw = anthropic_stream(anthropic_events_for()[:1]) + anthropic_stream(
        [{"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}]
    )
    converter = AnthropicStreamToOpenAI(include_usage=False, model="claude", created=1)
    body = converter.feed(raw) + converter.close()

    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, content=body, headers={"content-type": "text/event-stream"})

    client = openai.OpenAI(
        api_key="test",
        base_url="http://127.0.0.1:9/v1",
        http_client=httpx2.Client(transport=httpx2.MockTransport(handler)),
    )
    with pytest.raises(openai.APIError, match="Overloaded"):
        for _ in client.chat.completions.create(
            model="claude", messages=[{"role": "user", "content": "hi"}], stream=True
        ):
            pass
