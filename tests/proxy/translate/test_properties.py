"""Property-based tests (hypothesis) of the message and stream converters.

- conversations (system prompts, text, images, tool calls and results) keep their meaning
  through Anthropic -> OpenAI -> Anthropic and OpenAI -> Anthropic -> OpenAI;
- tool names are always valid for OpenAI and restored on the way back;
- any chunking of a stream gives the same output as one chunk, and that output is a
  well-formed stream whose text, tool calls and usage are the upstream's, exactly;
- usage maps exactly both ways.
"""

from __future__ import annotations

import itertools
import re
import string
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.metering import UsageTally
from proxy.translate import (
    AnthropicStreamToOpenAI,
    OpenAIStreamToAnthropic,
    ToolNames,
    anthropic_request_to_openai,
    anthropic_usage_to_openai,
    openai_request_to_anthropic,
    openai_usage_to_anthropic,
)
from proxy.translate.content import IMAGE_MEDIA_TYPES, RAW_ARGUMENTS_KEY
from tests.proxy.translate.sse_helpers import (
    anthropic_events,
    anthropic_stream,
    feed_in_pieces,
    openai_payloads,
    openai_stream,
)

# No deadline: tests assert behaviour, never speed (the machine is shared). A decorator, not a
# profile, so other test modules keep their own settings.
translation_settings = settings(max_examples=75, deadline=None)

OPENAI_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")

texts = st.text(min_size=1, max_size=30).filter(lambda s: bool(s.strip()))
tool_names = st.one_of(
    st.from_regex(r"[a-zA-Z0-9_-]{1,64}", fullmatch=True),
    st.builds(
        lambda server, tool: f"mcp__{server}__{tool}",
        st.text(min_size=1, max_size=50),
        st.text(min_size=1, max_size=70),
    ),
    st.text(min_size=1, max_size=128),
)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=8,
)
tool_inputs = st.dictionaries(
    st.text(max_size=10).filter(lambda key: key != RAW_ARGUMENTS_KEY), json_values, max_size=4
)
base64_data = st.text(alphabet=string.ascii_letters + string.digits + "+/", min_size=4, max_size=24)
images = st.one_of(
    st.builds(
        lambda media_type, data: {
            "type": "image",
            "source": {"type": "base64", "media_type": media_type, "data": data},
        },
        st.sampled_from(sorted(IMAGE_MEDIA_TYPES)),
        base64_data,
    ),
    st.builds(
        lambda path: {
            "type": "image",
            "source": {"type": "url", "url": f"https://example.com/{path}"},
        },
        st.text(alphabet=string.ascii_letters + "/._-", max_size=20),
    ),
)
text_blocks = st.builds(lambda text: {"type": "text", "text": text}, texts)


# --- Anthropic -> OpenAI -> Anthropic -------------------------------------------------------


@st.composite
def anthropic_requests(draw: st.DrawFn) -> dict[str, Any]:
    names = draw(st.lists(tool_names, min_size=1, max_size=4, unique=True))
    ids = (f"toolu_{n:04d}" for n in itertools.count())
    messages: list[dict[str, Any]] = []
    pending: list[str] = []
    turns = draw(st.integers(min_value=1, max_value=4))
    for turn in range(turns):
        messages.append({"role": "user", "content": draw(_user_content(pending))})
        if turn == turns - 1:
            break
        blocks: list[dict[str, Any]] = []
        if draw(st.booleans()):
            blocks.append({"type": "thinking", "thinking": draw(texts), "signature": "sig"})
        blocks.extend(draw(st.lists(text_blocks, max_size=2)))
        calls = draw(st.lists(st.tuples(st.sampled_from(names), tool_inputs), max_size=3))
        pending = [next(ids) for _ in calls]
        blocks.extend(
            {"type": "tool_use", "id": i, "name": n, "input": x}
            for i, (n, x) in zip(pending, calls, strict=True)
        )
        if not any(b["type"] in ("text", "tool_use") for b in blocks):
            blocks.append({"type": "text", "text": "ok"})
        messages.append({"role": "assistant", "content": blocks})
    body: dict[str, Any] = {
        "model": "claude-x",
        "max_tokens": draw(st.integers(min_value=1, max_value=128_000)),
        "messages": messages,
        "tools": [
            {
                "name": n,
                "description": draw(texts),
                "input_schema": {"type": "object", "properties": {}},
            }
            for n in names
        ],
    }
    system = draw(st.none() | texts | st.lists(text_blocks, min_size=1, max_size=3))
    if system is not None:
        body["system"] = system
    return body


def _user_content(pending: list[str]) -> st.SearchStrategy[Any]:
    results = [
        st.builds(
            lambda content, i=tool_use_id: {
                "type": "tool_result",
                "tool_use_id": i,
                **({"content": content} if content is not None else {}),
            },
            st.none() | texts | st.lists(text_blocks, min_size=1, max_size=2),
        )
        for tool_use_id in pending
    ]
    others = st.lists(text_blocks | images, min_size=0 if pending else 1, max_size=3)
    blocks = st.tuples(st.tuples(*results), others).map(lambda pair: list(pair[0]) + pair[1])
    return texts | blocks if not pending else blocks


def anthropic_meaning(body: dict[str, Any], restore: ToolNames | None = None) -> Any:
    """What a conversation says, in a form both APIs can hold."""
    name = restore.original if restore else (lambda n: n)
    system = body.get("system")
    system_texts = [system] if isinstance(system, str) else [b["text"] for b in system or []]
    turns: list[Any] = []
    for message in body["messages"]:
        content = message["content"]
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
        if message["role"] == "user":
            results = [
                (b["tool_use_id"], _result_text(b)) for b in blocks if b["type"] == "tool_result"
            ]
            others = [
                (b["type"], b.get("text", b.get("source")))
                for b in blocks
                if b["type"] in ("text", "image")
            ]
            turns.append(("user", results, others))
        else:
            text = "".join(b["text"] for b in blocks if b["type"] == "text")
            calls = [
                (b["id"], name(b["name"]), b["input"]) for b in blocks if b["type"] == "tool_use"
            ]
            turns.append(("assistant", text, calls))
    tools = [(name(t["name"]), t["description"], t["input_schema"]) for t in body.get("tools", [])]
    return "\n\n".join(system_texts), turns, tools


def _result_text(block: dict[str, Any]) -> str:
    content = block.get("content", "")
    return content if isinstance(content, str) else "\n\n".join(b["text"] for b in content)


def openai_tool_names_in(body: dict[str, Any]) -> list[str]:
    names = [tool["function"]["name"] for tool in body.get("tools", [])]
    for message in body["messages"]:
        names.extend(call["function"]["name"] for call in message.get("tool_calls", []))
    return names


@translation_settings
@given(anthropic_requests())
def test_anthropic_conversations_keep_their_meaning_through_openai_and_back(
    body: dict[str, Any],
) -> None:
    openai_body, names = anthropic_request_to_openai(body, model="gpt-x")
    assert all(OPENAI_NAME.fullmatch(n) for n in openai_tool_names_in(openai_body))
    back = openai_request_to_anthropic(openai_body, default_max_tokens=1)
    assert back["max_tokens"] == body["max_tokens"]
    assert anthropic_meaning(back, restore=names) == anthropic_meaning(body)


# --- OpenAI -> Anthropic -> OpenAI ----------------------------------------------------------


@st.composite
def openai_requests(draw: st.DrawFn) -> dict[str, Any]:
    names = draw(
        st.lists(
            st.from_regex(r"[a-zA-Z0-9_-]{1,64}", fullmatch=True),
            min_size=1,
            max_size=3,
            unique=True,
        )
    )
    ids = (f"call_{n}" for n in itertools.count())
    messages: list[dict[str, Any]] = []
    if draw(st.booleans()):
        messages.append(
            {"role": draw(st.sampled_from(["system", "developer"])), "content": draw(texts)}
        )
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        parts = st.lists(
            st.builds(lambda t: {"type": "text", "text": t}, texts)
            | st.builds(
                lambda d: {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{d}"}},
                base64_data,
            ),
            min_size=1,
            max_size=3,
        )
        messages.append({"role": "user", "content": draw(texts | parts)})
        calls = draw(st.lists(st.tuples(st.sampled_from(names), tool_inputs), max_size=2))
        text = draw(st.none() | texts)
        if not calls and text is None:
            continue
        tool_calls = [
            {
                "id": next(ids),
                "type": "function",
                "function": {"name": n, "arguments": orjson.dumps(x).decode()},
            }
            for n, x in calls
        ]
        messages.append(
            {
                "role": "assistant",
                "content": text,
                **({"tool_calls": tool_calls} if tool_calls else {}),
            }
        )
        messages.extend(
            {"role": "tool", "tool_call_id": c["id"], "content": draw(texts)} for c in tool_calls
        )
    if messages[-1]["role"] == "assistant":
        messages.append({"role": "user", "content": draw(texts)})
    tools = [
        {
            "type": "function",
            "function": {"name": n, "parameters": {"type": "object", "properties": {}}},
        }
        for n in names
    ]
    return {
        "model": "claude-x",
        "messages": messages,
        "tools": tools,
        "max_tokens": draw(st.integers(1, 10_000)),
    }


def openai_meaning(body: dict[str, Any]) -> Any:
    system: list[str] = []
    turns: list[Any] = []
    for message in body["messages"]:
        role, content = message["role"], message.get("content")
        if role in ("system", "developer"):
            system.append(content)
        elif role == "assistant":
            calls = [
                (c["id"], c["function"]["name"], orjson.loads(c["function"]["arguments"]))
                for c in message.get("tool_calls", [])
            ]
            turns.append(("assistant", content or "", calls))
        elif role == "tool":
            turns.append(("tool", message["tool_call_id"], content))
        else:
            parts = [{"type": "text", "text": content}] if isinstance(content, str) else content
            if turns and turns[-1][0] == "user":
                turns[-1] = ("user", turns[-1][1] + parts)
            else:
                turns.append(("user", parts))
    return "\n\n".join(system), turns


@translation_settings
@given(openai_requests())
def test_openai_conversations_keep_their_meaning_through_anthropic_and_back(
    body: dict[str, Any],
) -> None:
    anthropic_body = openai_request_to_anthropic(body, default_max_tokens=1)
    back, names = anthropic_request_to_openai(anthropic_body, model="claude-x")
    assert names.renamed() == {}
    assert back["max_tokens"] == body["max_tokens"]
    assert openai_meaning(back) == openai_meaning(body)


# --- tool names -----------------------------------------------------------------------------


@translation_settings
@given(st.lists(st.text(max_size=200), max_size=12))
def test_tool_names_are_valid_for_openai_distinct_and_restored(originals: list[str]) -> None:
    names = ToolNames()
    sent = [names.to_openai(name) for name in originals]
    assert all(OPENAI_NAME.fullmatch(name) for name in sent)
    assert len(set(sent)) == len(set(originals))
    assert [names.original(name) for name in sent] == originals
    assert [names.to_openai(name) for name in originals] == sent  # stable within a request


# --- streams: OpenAI upstream -> Anthropic client -------------------------------------------


@st.composite
def openai_upstream_streams(draw: st.DrawFn) -> tuple[bytes, ToolNames, dict[str, Any]]:
    names = ToolNames()
    text_pieces = draw(st.lists(st.text(min_size=1, max_size=8), max_size=4))
    calls = draw(
        st.lists(
            st.tuples(tool_names, tool_inputs, st.integers(min_value=1, max_value=4)), max_size=3
        )
    )
    finish = draw(st.sampled_from(["stop", "length", "tool_calls", "content_filter", None]))
    usage = draw(st.none() | _openai_usages())
    chunks: list[dict[str, Any]] = [_chunk({"role": "assistant", "content": ""})]
    chunks.extend(_chunk({"content": piece}) for piece in text_pieces)
    for index, (name, tool_input, pieces) in enumerate(calls):
        arguments = orjson.dumps(tool_input).decode()
        size = -(-len(arguments) // pieces)
        fragments = [arguments[i : i + size] for i in range(0, len(arguments), size)]
        header = {
            "index": index,
            "id": f"call_{index}",
            "type": "function",
            "function": {"name": names.to_openai(name), "arguments": ""},
        }
        chunks.append(_chunk({"tool_calls": [header]}))
        chunks.extend(
            _chunk({"tool_calls": [{"index": index, "function": {"arguments": f}}]})
            for f in fragments
        )
    if finish is not None:
        chunks.append(_chunk({}, finish))
    if usage is not None:
        chunks.append(
            {
                "id": "chatcmpl-p",
                "object": "chat.completion.chunk",
                "created": 1,
                "model": "m",
                "choices": [],
                "usage": usage,
            }
        )
    raw = openai_stream(
        chunks, done=finish is not None and draw(st.booleans()), crlf=draw(st.booleans())
    )
    if draw(st.booleans()):
        raw = raw.replace(b"\n\ndata: ", b"\n\n: keep-alive\n\ndata: ", 1)
    expected = {
        "text": "".join(text_pieces),
        "calls": [(n, x) for n, x, _ in calls],
        "finish": finish,
        "usage": usage,
    }
    return raw, names, expected


def _chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
    choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
    return {
        "id": "chatcmpl-p",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [choice],
        "usage": None,
    }


@st.composite
def _openai_usages(draw: st.DrawFn) -> dict[str, Any]:
    prompt = draw(st.integers(min_value=0, max_value=2_000_000))
    cached = draw(st.integers(min_value=0, max_value=prompt))
    written = draw(st.integers(min_value=0, max_value=prompt - cached))
    completion = draw(st.integers(min_value=0, max_value=200_000))
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached, "cache_write_tokens": written},
    }


def cuts_for(data: st.DataObject, raw: bytes) -> list[int]:
    return data.draw(st.lists(st.integers(min_value=0, max_value=len(raw)), max_size=25))


@translation_settings
@given(openai_upstream_streams(), st.data())
def test_openai_streams_translate_the_same_however_they_are_chunked(
    stream: tuple[bytes, ToolNames, dict[str, Any]], data: st.DataObject
) -> None:
    raw, names, expected = stream
    whole = OpenAIStreamToAnthropic(names, "claude-x")
    reference = whole.feed(raw) + whole.close()
    pieces = feed_in_pieces(OpenAIStreamToAnthropic(names, "claude-x"), raw, cuts_for(data, raw))
    assert pieces == reference

    events = anthropic_events(reference)
    assert events[0]["type"] == "message_start"
    text, calls = _blocks_of(events)
    assert text == expected["text"]
    if expected["finish"] is None:
        # Cut short: tool calls, complete only at the end, are never sent half-made.
        assert calls == []
        assert events[-1]["type"] == "error"
    else:
        assert calls == expected["calls"]
        assert [e["type"] for e in events[-2:]] == ["message_delta", "message_stop"]


def _blocks_of(events: list[dict[str, Any]]) -> tuple[str, list[Any]]:
    """Text and (name, input) of a well-formed event sequence (indexes checked on the way)."""
    open_blocks: dict[int, dict[str, Any]] = {}
    next_index = 0
    text, calls = "", []
    for event in events:
        if event["type"] == "content_block_start":
            assert event["index"] == next_index and not open_blocks
            open_blocks[event["index"]] = {"block": event["content_block"], "json": ""}
            next_index += 1
        elif event["type"] == "content_block_delta":
            current = open_blocks[event["index"]]
            delta = event["delta"]
            if delta["type"] == "text_delta":
                text += delta["text"]
            else:
                current["json"] += delta["partial_json"]
        elif event["type"] == "content_block_stop":
            block = open_blocks.pop(event["index"])
            if block["block"]["type"] == "tool_use":
                calls.append((block["block"]["name"], orjson.loads(block["json"] or "{}")))
    return text, calls


@translation_settings
@given(openai_upstream_streams(), st.data())
def test_usage_tally_meters_translated_streams_exactly(
    stream: tuple[bytes, ToolNames, dict[str, Any]], data: st.DataObject
) -> None:
    raw, names, expected = stream
    converter = OpenAIStreamToAnthropic(names, "claude-x")
    tally = UsageTally()
    start = 0
    for cut in [*sorted(set(cuts_for(data, raw))), len(raw)]:
        tally.feed_sse(converter.feed(raw[start:cut]))
        start = cut
    tally.feed_sse(converter.close())
    usage = expected["usage"] or {
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "prompt_tokens_details": {},
    }
    details = usage["prompt_tokens_details"]
    cached, written = details.get("cached_tokens", 0), details.get("cache_write_tokens", 0)
    metered = tally.usage()
    assert (
        metered.input_tokens + metered.cache_read_tokens + metered.cache_write_5m_tokens
        == usage["prompt_tokens"]
    )
    assert (metered.cache_read_tokens, metered.cache_write_5m_tokens) == (cached, written)
    assert metered.output_tokens == usage["completion_tokens"]
    assert tally.completed == (expected["finish"] is not None)


# --- streams: Anthropic upstream -> OpenAI client -------------------------------------------


@st.composite
def anthropic_upstream_streams(draw: st.DrawFn) -> tuple[bytes, dict[str, Any]]:
    start_usage = {
        "input_tokens": draw(st.integers(0, 10**6)),
        "cache_creation_input_tokens": draw(st.integers(0, 10**6)),
        "cache_read_input_tokens": draw(st.integers(0, 10**6)),
        "output_tokens": 1,
    }
    message: dict[str, Any] = {
        "id": "msg_p",
        "type": "message",
        "role": "assistant",
        "model": "claude",
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": start_usage,
    }
    events: list[dict[str, Any]] = [{"type": "message_start", "message": message}]
    text, calls = "", []
    blocks = draw(st.lists(st.sampled_from(["text", "thinking", "tool_use"]), max_size=5))
    for index, kind in enumerate(blocks):
        if draw(st.booleans()):
            events.append({"type": "ping"})
        events.extend(_anthropic_block(draw, index, kind))
        if kind == "text":
            text += "".join(
                e["delta"]["text"]
                for e in events
                if e.get("index") == index and e["type"] == "content_block_delta"
            )
        elif kind == "tool_use":
            start = next(e for e in events if e.get("index") == index)
            arguments = "".join(
                e["delta"]["partial_json"]
                for e in events
                if e.get("index") == index and e["type"] == "content_block_delta"
            )
            calls.append((start["content_block"]["id"], start["content_block"]["name"], arguments))
    output = 1
    final_usage = dict(start_usage)
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        output += draw(st.integers(0, 5000))
        delta_usage: dict[str, Any] = {"output_tokens": output}
        if draw(st.booleans()):
            delta_usage["cache_read_input_tokens"] = final_usage["cache_read_input_tokens"] = draw(
                st.integers(0, 10**6)
            )
        final_usage["output_tokens"] = output
        events.append(
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": delta_usage,
            }
        )
    events.append({"type": "message_stop"})
    expected = {"text": text, "calls": calls, "usage": final_usage}
    return anthropic_stream(events, crlf=draw(st.booleans())), expected


def _anthropic_block(draw: st.DrawFn, index: int, kind: str) -> list[dict[str, Any]]:
    pieces = draw(st.lists(st.text(min_size=1, max_size=8), max_size=3))
    if kind == "text":
        block: dict[str, Any] = {"type": "text", "text": ""}
        deltas = [{"type": "text_delta", "text": p} for p in pieces]
    elif kind == "thinking":
        block = {"type": "thinking", "thinking": "", "signature": ""}
        deltas = [{"type": "thinking_delta", "thinking": p} for p in pieces] + [
            {"type": "signature_delta", "signature": "sig"}
        ]
    else:
        block = {
            "type": "tool_use",
            "id": f"toolu_{index}",
            "name": draw(st.from_regex(r"[a-zA-Z0-9_-]{1,64}", fullmatch=True)),
            "input": {},
        }
        arguments = orjson.dumps(draw(tool_inputs)).decode()
        middle = draw(st.integers(0, len(arguments)))
        deltas = [
            {"type": "input_json_delta", "partial_json": part}
            for part in ("", arguments[:middle], arguments[middle:])
        ]
    return [
        {"type": "content_block_start", "index": index, "content_block": block},
        *({"type": "content_block_delta", "index": index, "delta": d} for d in deltas),
        {"type": "content_block_stop", "index": index},
    ]


@translation_settings
@given(anthropic_upstream_streams(), st.booleans(), st.data())
def test_anthropic_streams_translate_the_same_however_they_are_chunked(
    stream: tuple[bytes, dict[str, Any]], include_usage: bool, data: st.DataObject
) -> None:
    raw, expected = stream
    whole = AnthropicStreamToOpenAI(include_usage=include_usage, model="claude", created=1)
    reference = whole.feed(raw) + whole.close()
    pieces = feed_in_pieces(
        AnthropicStreamToOpenAI(include_usage=include_usage, model="claude", created=1),
        raw,
        cuts_for(data, raw),
    )
    assert pieces == reference

    payloads = openai_payloads(reference)
    assert payloads[-1] == "[DONE]"
    chunks = [p for p in payloads[:-1] if p["choices"]]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    deltas = [c["choices"][0]["delta"] for c in chunks]
    assert "".join(d.get("content") or "" for d in deltas) == expected["text"]
    calls: dict[int, list[str]] = {}
    for delta in deltas:
        for call in delta.get("tool_calls", []):
            if "id" in call:
                calls[call["index"]] = [call["id"], call["function"]["name"], ""]
            calls[call["index"]][2] += call["function"]["arguments"]
    assert [tuple(calls[i]) for i in sorted(calls)] == expected["calls"]
    usage_chunks = [p for p in payloads[:-1] if not p["choices"]]
    if include_usage:
        usage = expected["usage"]
        prompt = (
            usage["input_tokens"]
            + usage["cache_creation_input_tokens"]
            + usage["cache_read_input_tokens"]
        )
        assert [c["usage"]["prompt_tokens"] for c in usage_chunks] == [prompt]
        assert usage_chunks[0]["usage"]["completion_tokens"] == usage["output_tokens"]
        assert (
            usage_chunks[0]["usage"]["prompt_tokens_details"]["cached_tokens"]
            == usage["cache_read_input_tokens"]
        )
    else:
        assert usage_chunks == []
        assert all("usage" not in c for c in chunks)


# --- usage ----------------------------------------------------------------------------------


counts = st.integers(min_value=0, max_value=10**9)


@translation_settings
@given(counts, counts, counts, counts)
def test_anthropic_usage_survives_openai_and_back(
    uncached: int, written: int, read: int, output: int
) -> None:
    usage = {
        "input_tokens": uncached,
        "cache_creation_input_tokens": written,
        "cache_read_input_tokens": read,
        "output_tokens": output,
    }
    openai_usage = anthropic_usage_to_openai(usage)
    assert openai_usage["prompt_tokens"] == uncached + written + read
    assert openai_usage["total_tokens"] == uncached + written + read + output
    assert openai_usage_to_anthropic(openai_usage) == usage


@translation_settings
@given(_openai_usages())
def test_openai_usage_survives_anthropic_and_back(usage: dict[str, Any]) -> None:
    assert anthropic_usage_to_openai(openai_usage_to_anthropic(usage)) == usage
