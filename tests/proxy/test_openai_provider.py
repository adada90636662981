"""The OpenAI / OpenAI-compatible adapter against the project's fake OpenAI server, through the
real aiohttp client: what goes upstream is a Chat Completions request, what comes back is
Anthropic-shaped (message, SSE, errors), and usage reaches UsageTally exactly."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

import aiohttp
import orjson
import pytest

from governance.policy import ProviderConfig, RouteTarget
from proxy.forwarding import READ_ERRORS
from proxy.metering import UsageTally
from proxy.providers.base import UpstreamCall
from proxy.providers.openai_compat import (
    OPENAI_BASE_URL,
    OpenAIProvider,
    ProviderMisconfigured,
    endpoint_of,
)
from proxy.translate import ToolNames
from proxy.upstream import UpstreamClient
from tests.fakes.openai_upstream import FakeOpenAI, Reply, ToolCall
from tests.proxy.provider_fakes import (
    Clock,
    drain,
    json_tally,
    route_target,
    run_forward,
    stream_of,
)

MODEL = "llama-3.3-70b-versatile"
SYSTEM = [
    {"type": "text", "text": "x-anthropic-billing-header: cc_version=2.1.332.1c9;"},
    {"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}},
]
CLIENT_HEADERS = {
    "anthropic-version": "2023-06-01",
    "anthropic-beta": "claude-code-20250219,interleaved-thinking-2025-05-14",
    "user-agent": "claude-cli/2.1.332 (external, sdk-cli)",
    "x-app": "cli",
    "x-claude-code-session-id": "0b7f4c1e-5d0c-4f59-9a43-0e4c2a1b9d11",
}
BASH_TOOL: dict[str, Any] = {
    "name": "Bash",
    "description": "Run a shell command.",
    "input_schema": {
        "type": "object",
        "properties": {"command": {"type": "string"}},
        "required": ["command"],
    },
}


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def provider(clock: Clock) -> AsyncIterator[OpenAIProvider]:
    client = UpstreamClient()
    yield OpenAIProvider(client, clock=clock)
    await client.close()


def target(
    fake: FakeOpenAI,
    *,
    kind: str = "openai-compatible",
    base_url: str | None = None,
    settings: Mapping[str, object] | None = None,
    api_key: str | None = None,
    name: str = "groq",
    model: str = MODEL,
) -> RouteTarget:
    config = ProviderConfig(
        name=name,
        kind=kind,
        base_url=fake.base_url if base_url is None else base_url,
        region="",
        settings=settings or {},
        credentials={"api_key": (fake.api_key or "") if api_key is None else api_key},
    )
    return route_target(config, model)


def call(
    *,
    stream: bool = False,
    messages: list[dict[str, Any]] | None = None,
    tools: list[dict[str, Any]] | None = None,
    max_tokens: int = 32000,
    path: str = "/v1/messages",
) -> UpstreamCall:
    parsed: dict[str, Any] = {
        "model": "claude-haiku-4-5",
        "max_tokens": max_tokens,
        "system": SYSTEM,
        "messages": messages or [{"role": "user", "content": "Say hello to the gateway."}],
        "thinking": {"type": "adaptive"},
        "metadata": {"user_id": '{"device_id":"' + "ab" * 32 + '","session_id":"s"}'},
    }
    if tools:
        parsed["tools"] = tools
    if stream:
        parsed["stream"] = True
    return UpstreamCall(
        path=path,
        query="beta=true",
        body=orjson.dumps(parsed),
        parsed=parsed,
        headers=dict(CLIENT_HEADERS),
        stream=stream,
    )


def events(body: bytes) -> list[dict[str, Any]]:
    found = []
    for frame in body.split(b"\n\n"):
        for line in frame.split(b"\n"):
            if line.startswith(b"data: "):
                found.append(orjson.loads(line[6:]))
    return found


def streamed_message(body: bytes) -> dict[str, Any]:
    """The message an Anthropic SDK would assemble from the stream."""
    message: dict[str, Any] = {}
    partial: dict[int, str] = {}
    for event in events(body):
        kind = event["type"]
        if kind == "message_start":
            message = {**event["message"], "content": []}
        elif kind == "content_block_start":
            message["content"].append(dict(event["content_block"]))
        elif kind == "content_block_delta":
            delta, block = event["delta"], message["content"][event["index"]]
            if delta["type"] == "text_delta":
                block["text"] += delta["text"]
            else:
                partial[event["index"]] = partial.get(event["index"], "") + delta["partial_json"]
        elif kind == "content_block_stop" and event["index"] in partial:
            message["content"][event["index"]]["input"] = orjson.loads(partial[event["index"]])
        elif kind == "message_delta":
            message["stop_reason"] = event["delta"]["stop_reason"]
    return message


CACHED = Reply(text="Cached hello.", prompt_tokens=1500, cached_tokens=1200, completion_tokens=17)


def assert_cached_usage(tally: UsageTally) -> None:
    usage = tally.usage()
    assert (usage.input_tokens, usage.cache_read_tokens, usage.output_tokens) == (300, 1200, 17)
    assert (usage.cache_write_5m_tokens, usage.cache_write_1h_tokens) == (0, 0)


# --- requests and answers -----------------------------------------------------------------


async def test_json_reply_is_an_anthropic_message_with_exact_cached_usage(fake, provider):
    fake.queue(CACHED)
    response = await provider.send(target=target(fake), call=call())
    body = await drain(response)
    assert (response.status, response.content_type) == (200, "application/json")
    message = orjson.loads(body)
    assert message["type"] == "message" and message["role"] == "assistant"
    assert message["content"] == [{"type": "text", "text": "Cached hello."}]
    assert (message["stop_reason"], message["model"]) == ("end_turn", MODEL)
    tally = json_tally(body)
    assert_cached_usage(tally)
    assert tally.completed


async def test_stream_is_anthropic_sse_with_exact_cached_usage(fake, provider):
    fake.queue(CACHED)
    response, chunks, tally = await stream_of(provider, target(fake), call(stream=True))
    assert (response.status, response.content_type) == (200, "text/event-stream")
    assert chunks[0].startswith(b"event: message_start\n")
    assert_cached_usage(tally)
    assert tally.completed and tally.stop_reason == "end_turn"
    message = streamed_message(b"".join(chunks))
    assert message["content"] == [{"type": "text", "text": "Cached hello."}]
    sent = fake.chat_requests[0]
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}


async def test_the_request_upstream_is_chat_completions_with_the_providers_key_only(fake, provider):
    await drain(await provider.send(target=target(fake), call=call()))
    received = fake.received[0]
    assert (received.method, received.path) == ("POST", "/v1/chat/completions")
    headers = {name.lower(): value for name, value in received.headers.items()}
    assert headers["authorization"] == f"Bearer {fake.api_key}"
    assert headers["user-agent"] == "claude-gateway"
    assert not [name for name in headers if name.startswith(("anthropic-", "x-app", "x-claude"))]
    sent = received.json
    assert sent["model"] == MODEL
    assert sent["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Say hello to the gateway."},
    ]
    assert "thinking" not in sent and len(sent["user"]) == 64  # hashed Claude Code metadata


async def test_the_fake_echoes_a_simple_prompt(fake, provider):
    body = await drain(await provider.send(target=target(fake), call=call()))
    text = orjson.loads(body)["content"][0]["text"]
    assert (
        text
        == f"Hello from the fake OpenAI upstream ({MODEL}). You said: Say hello to the gateway."
    )


async def test_response_headers_are_anthropic_request_id_and_rate_limits(fake, provider):
    response = await provider.send(target=target(fake), call=call())
    await drain(response)
    headers = dict(response.headers)
    assert headers[b"request-id"] == b"req_fake_openai_1"
    assert headers[b"anthropic-ratelimit-requests-remaining"] == b"499"
    assert headers[b"anthropic-ratelimit-tokens-limit"] == b"30000"
    assert b"anthropic-ratelimit-tokens-reset" in headers


async def test_count_tokens_is_not_found_and_never_reaches_the_upstream(fake, provider):
    response = await provider.send(target=target(fake), call=call(path="/v1/messages/count_tokens"))
    assert response.status == 404
    error = orjson.loads(await drain(response))["error"]
    assert error == {
        "type": "not_found_error",
        "message": 'count_tokens is not available on provider "groq".',
    }
    assert fake.received == []


# --- tools, both ways ---------------------------------------------------------------------


BASH_CALL = ToolCall("Bash", {"command": "ls -la /tmp"}, id="call_abc123")


async def test_tool_calls_in_a_json_reply_become_tool_use_blocks(fake, provider):
    fake.queue(Reply(text="Let me look.", tool_calls=[BASH_CALL]))
    body = await drain(await provider.send(target=target(fake), call=call(tools=[BASH_TOOL])))
    message = orjson.loads(body)
    assert message["stop_reason"] == "tool_use"
    assert message["content"] == [
        {"type": "text", "text": "Let me look."},
        {
            "type": "tool_use",
            "id": "call_abc123",
            "name": "Bash",
            "input": {"command": "ls -la /tmp"},
        },
    ]
    sent = fake.chat_requests[0]
    assert sent["tools"][0]["function"]["name"] == "Bash"
    assert sent["tools"][0]["function"]["parameters"] == BASH_TOOL["input_schema"]


async def test_streamed_tool_call_fragments_become_one_tool_use_block(fake, provider):
    second = ToolCall("Read", {"file_path": "/etc/hostname"}, id="call_def456")
    fake.queue(
        Reply(text="", tool_calls=[BASH_CALL, second], prompt_tokens=90, completion_tokens=30)
    )
    _, chunks, tally = await stream_of(provider, target(fake), call(stream=True, tools=[BASH_TOOL]))
    message = streamed_message(b"".join(chunks))
    assert message["stop_reason"] == "tool_use" and tally.stop_reason == "tool_use"
    assert [(b["id"], b["name"], b["input"]) for b in message["content"]] == [
        ("call_abc123", "Bash", {"command": "ls -la /tmp"}),
        ("call_def456", "Read", {"file_path": "/etc/hostname"}),
    ]
    assert (tally.input_tokens, tally.output_tokens) == (90, 30)


async def test_tool_use_history_goes_upstream_as_tool_calls_and_a_tool_message(fake, provider):
    history: list[dict[str, Any]] = [
        {"role": "user", "content": "List /tmp."},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Let me look."},
                {"type": "tool_use", "id": "toolu_01", "name": "Bash", "input": {"command": "ls"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_01", "content": "a.txt\nb.txt"},
                {"type": "text", "text": "<system-reminder>Keep going.</system-reminder>"},
            ],
        },
    ]
    body = await drain(
        await provider.send(target=target(fake), call=call(messages=history, tools=[BASH_TOOL]))
    )
    sent = fake.chat_requests[0]["messages"]
    assert sent[2] == {
        "role": "assistant",
        "content": "Let me look.",
        "tool_calls": [
            {
                "id": "toolu_01",
                "type": "function",
                "function": {"name": "Bash", "arguments": '{"command":"ls"}'},
            }
        ],
    }
    assert sent[3] == {"role": "tool", "tool_call_id": "toolu_01", "content": "a.txt\nb.txt"}
    # The fake's script answers a tool result with its content: the second turn of an agent.
    assert orjson.loads(body)["content"][0]["text"] == "The tool returned: a.txt b.txt"


async def test_a_two_turn_exchange_runs_the_scripted_tool_call(fake, provider):
    ask = {"role": "user", "content": 'Please call tool Bash with {"command": "echo hi"} now.'}
    first = streamed_message(
        await drain(
            await provider.send(
                target=target(fake), call=call(stream=True, messages=[ask], tools=[BASH_TOOL])
            )
        )
    )
    assert first["stop_reason"] == "tool_use"
    tool_use = first["content"][0]
    assert (tool_use["name"], tool_use["input"]) == ("Bash", {"command": "echo hi"})
    result = {"type": "tool_result", "tool_use_id": tool_use["id"], "content": "hi"}
    history: list[dict[str, Any]] = [
        ask,
        {"role": "assistant", "content": first["content"]},
        {"role": "user", "content": [result]},
    ]
    second = streamed_message(
        await drain(
            await provider.send(
                target=target(fake), call=call(stream=True, messages=history, tools=[BASH_TOOL])
            )
        )
    )
    assert second["stop_reason"] == "end_turn"
    assert second["content"] == [{"type": "text", "text": "The tool returned: hi"}]


async def test_tool_names_made_valid_for_openai_are_restored_in_the_reply(fake, provider):
    name = "mcp__docs.internal__search"
    openai_name = ToolNames().to_openai(name)
    assert openai_name != name
    fake.queue(Reply(text="", tool_calls=[ToolCall(openai_name, {"q": "x"}, id="call_1")]))
    tool = {**BASH_TOOL, "name": name}
    body = await drain(await provider.send(target=target(fake), call=call(tools=[tool])))
    assert fake.chat_requests[0]["tools"][0]["function"]["name"] == openai_name
    assert orjson.loads(body)["content"][0]["name"] == name


# --- errors -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "status", "error_type"),
    [
        (
            Reply(status=429, error_type="tokens", error_code="rate_limit_exceeded"),
            429,
            "rate_limit_error",
        ),
        (Reply(status=500), 500, "api_error"),
        (
            Reply(status=503, error_message="The engine is currently overloaded."),
            529,
            "overloaded_error",
        ),
        (Reply(status=400, error_code="context_length_exceeded"), 400, "invalid_request_error"),
        (Reply(status=404, error_code="model_not_found"), 404, "not_found_error"),
        (Reply(status=403, error_type="permission_denied"), 403, "permission_error"),
    ],
)
async def test_upstream_errors_are_mapped_to_anthropic_errors(
    fake, provider, reply, status, error_type
):
    fake.queue(reply)
    response = await provider.send(target=target(fake), call=call())
    body = orjson.loads(await drain(response))
    assert response.status == status
    assert body["type"] == "error" and body["error"]["type"] == error_type
    assert body["request_id"] == "req_fake_openai_error"


async def test_retry_after_reaches_the_gateway_with_a_rate_limit(fake, provider):
    fake.queue(Reply(status=429, retry_after="7"))
    response = await provider.send(target=target(fake), call=call(stream=True))
    await drain(response)
    assert (response.status, dict(response.headers)[b"retry-after"]) == (429, b"7")


async def test_a_rejected_key_keeps_401_and_never_echoes_the_key(fake, provider):
    response = await provider.send(
        target=target(fake, api_key="sk-wrong-0123456789abcdef"), call=call()
    )
    body = await drain(response)
    assert response.status == 401
    assert orjson.loads(body)["error"]["type"] == "authentication_error"
    assert b"sk-" not in body


async def test_an_invalid_request_upstream_is_a_400_with_the_upstreams_reason(fake, provider):
    fake.max_tokens_limit = 8192
    response = await provider.send(target=target(fake), call=call(max_tokens=32000))
    error = orjson.loads(await drain(response))["error"]
    assert response.status == 400 and error["type"] == "invalid_request_error"
    assert "less than or equal to `8192`" in error["message"]


async def test_a_request_the_translation_refuses_never_reaches_the_upstream(fake, provider):
    upstream_call = call()
    upstream_call.parsed["mcp_servers"] = [
        {"type": "url", "url": "https://mcp.example", "name": "x"}
    ]
    response = await provider.send(target=target(fake), call=upstream_call)
    error = orjson.loads(await drain(response))["error"]
    assert response.status == 400 and "mcp_servers" in error["message"]
    assert fake.received == []


# --- broken streams -----------------------------------------------------------------------


async def test_a_dropped_stream_ends_with_an_anthropic_error_event(fake, provider):
    fake.queue(Reply(text="one two three four five six", deltas=6, drop_after=3))
    response, chunks, tally = await stream_of(provider, target(fake), call(stream=True))
    assert response.status == 200
    body = b"".join(chunks)
    last = events(body)[-1]
    assert last["type"] == "error" and last["error"]["type"] == "api_error"
    assert b"message_stop" not in body
    assert tally.error_type == "api_error" and not tally.completed
    assert streamed_message(body)["content"][0]["text"] == "one two"


async def test_a_stream_dropped_before_any_chunk_is_a_connection_failure(fake, provider):
    fake.queue(Reply(drop_after=0))
    with pytest.raises(READ_ERRORS):
        await provider.send(target=target(fake), call=call(stream=True))


async def test_an_error_in_the_stream_after_content_is_an_error_event(fake, provider):
    fake.queue(Reply(text="one two three", deltas=3, stream_error_after=2))
    _, chunks, tally = await stream_of(provider, target(fake), call(stream=True))
    assert events(b"".join(chunks))[-1]["type"] == "error"
    assert tally.error_type == "api_error" and not tally.completed


async def test_an_error_before_any_content_is_an_http_error_failover_can_act_on(fake, provider):
    fake.queue(Reply(stream_error_after=0, error_message="Model is loading."))
    response = await provider.send(target=target(fake), call=call(stream=True))
    body = orjson.loads(await drain(response))
    assert response.status == 500
    assert body["error"] == {"type": "api_error", "message": "Model is loading."}


async def test_a_stream_without_done_after_its_finish_reason_is_complete(fake, provider):
    fake.queue(Reply(text="All done.", done=False, prompt_tokens=10, completion_tokens=2))
    _, chunks, tally = await stream_of(provider, target(fake), call(stream=True))
    assert tally.completed and (tally.input_tokens, tally.output_tokens) == (10, 2)
    assert chunks[-1].endswith(b'event: message_stop\ndata: {"type":"message_stop"}\n\n')


async def test_a_json_answer_to_a_stream_request_is_streamed_to_the_client(fake, provider):
    fake.queue(
        Reply(
            text="Plain JSON.",
            tool_calls=[BASH_CALL],
            ignore_stream=True,
            prompt_tokens=1500,
            cached_tokens=1200,
            completion_tokens=17,
        )
    )
    response, chunks, tally = await stream_of(
        provider, target(fake), call(stream=True, tools=[BASH_TOOL])
    )
    assert (response.status, response.content_type) == (200, "text/event-stream")
    message = streamed_message(b"".join(chunks))
    assert message["content"][0] == {"type": "text", "text": "Plain JSON."}
    assert message["content"][1]["input"] == {"command": "ls -la /tmp"}
    assert_cached_usage(tally)
    assert tally.completed and tally.stop_reason == "tool_use"


async def test_the_stream_is_relayed_as_it_arrives(fake, provider):
    fake.queue(Reply(text="a b c d", deltas=4, hold_after=3))  # role, "a", " b", then held
    response = await provider.send(target=target(fake), call=call(stream=True))
    seen: list[str] = []
    chunks = aiter(response.chunks())
    while seen != ["a", " b"]:  # what was sent before the hold arrives while the fake waits
        seen += [e["delta"]["text"] for e in events(await anext(chunks)) if "delta" in e]
    assert not fake.gate.is_set()
    fake.gate.set()
    rest = b"".join([chunk async for chunk in chunks])
    await response.close()
    assert [e["delta"]["text"] for e in events(rest) if e["type"] == "content_block_delta"] == [
        " c",
        " d",
    ]


async def test_a_slow_stream_arrives_whole(fake, provider):
    fake.queue(Reply(text="a b c d", deltas=4, chunk_delay=0.02))
    _, chunks, tally = await stream_of(provider, target(fake), call(stream=True))
    assert streamed_message(b"".join(chunks))["content"] == [{"type": "text", "text": "a b c d"}]
    assert tally.completed


# --- usage --------------------------------------------------------------------------------


async def test_a_stream_without_usage_meters_zero_and_warns_once_per_provider(
    fake, provider, clock, caplog
):
    fake.default = Reply(usage=False)
    caplog.set_level(logging.WARNING, logger="gateway.providers.openai")
    for _ in range(3):
        _, _, tally = await stream_of(provider, target(fake), call(stream=True))
        assert tally.completed and tally.usage().prompt_tokens == 0
    await drain(await provider.send(target=target(fake, name="ollama"), call=call()))
    clock.now += 601
    await drain(await provider.send(target=target(fake), call=call()))
    warned = [r.getMessage() for r in caplog.records if "without token usage" in r.getMessage()]
    assert len(warned) == 3
    assert [w.split()[1] for w in warned] == ["groq", "ollama", "groq"]


async def test_usage_with_reasoning_tokens_is_output_and_cache_is_exact_in_json(fake, provider):
    fake.queue(
        Reply(
            text="Hm.",
            prompt_tokens=2048,
            cached_tokens=2048,
            completion_tokens=500,
            reasoning_tokens=480,
        )
    )
    tally = json_tally(await drain(await provider.send(target=target(fake), call=call())))
    usage = tally.usage()
    assert (usage.input_tokens, usage.cache_read_tokens, usage.output_tokens) == (0, 2048, 500)


# --- provider settings --------------------------------------------------------------------


@pytest.mark.parametrize("suffix", ["", "/"])
async def test_base_url_with_or_without_a_trailing_slash_reaches_chat_completions(
    fake, provider, suffix
):
    await drain(
        await provider.send(target=target(fake, base_url=fake.base_url + suffix), call=call())
    )
    assert fake.received[0].path == "/v1/chat/completions"


def provider_config(kind: str, base_url: str = "", **settings: object) -> ProviderConfig:
    return ProviderConfig("p", kind, base_url, "", settings, {"api_key": "sk-test"})


def test_kind_openai_defaults_to_openais_endpoint_and_max_completion_tokens():
    endpoint = endpoint_of(provider_config("openai"))
    assert endpoint.url == OPENAI_BASE_URL + "/chat/completions"
    assert endpoint.max_tokens_field == "max_completion_tokens"
    assert endpoint.max_output_tokens is None


def test_kind_openai_compatible_defaults_to_max_tokens():
    endpoint = endpoint_of(provider_config("openai-compatible", "http://localhost:11434/v1/"))
    assert endpoint.url == "http://localhost:11434/v1/chat/completions"
    assert endpoint.max_tokens_field == "max_tokens"


@pytest.mark.parametrize(
    "config",
    [
        provider_config("openai-compatible"),  # no base_url: nowhere to go
        provider_config("openai-compatible", "localhost:11434/v1"),
        provider_config("openai", max_tokens_field="max_output"),
        provider_config("openai", max_output_tokens=0),
        provider_config("openai", max_output_tokens="lots"),
        provider_config("openai", max_output_tokens=True),
    ],
)
def test_settings_that_cannot_make_a_request_are_refused(config):
    with pytest.raises(ProviderMisconfigured):
        endpoint_of(config)


async def test_a_misconfigured_provider_fails_like_an_unreachable_one(fake, provider):
    with pytest.raises(OSError):
        await provider.send(target=target(fake, base_url=""), call=call())
    assert fake.received == []


async def test_kind_openai_sends_max_completion_tokens(fake, provider):
    await drain(await provider.send(target=target(fake, kind="openai"), call=call(max_tokens=500)))
    sent = fake.chat_requests[0]
    assert sent["max_completion_tokens"] == 500 and "max_tokens" not in sent


async def test_max_tokens_field_setting_overrides_the_kinds_default(fake, provider):
    config = target(fake, kind="openai", settings={"max_tokens_field": "max_tokens"})
    await drain(await provider.send(target=config, call=call(max_tokens=500)))
    sent = fake.chat_requests[0]
    assert sent["max_tokens"] == 500 and "max_completion_tokens" not in sent


@pytest.mark.parametrize("cap", [8192, "8192"])
async def test_max_output_tokens_caps_what_claude_code_asks_for(fake, provider, cap):
    fake.max_tokens_limit = 8192  # as Groq refuses more than the model's output limit
    config = target(fake, settings={"max_output_tokens": cap})
    response = await provider.send(target=config, call=call(max_tokens=32000))
    await drain(response)
    assert response.status == 200 and fake.chat_requests[0]["max_tokens"] == 8192


async def test_a_smaller_request_than_the_cap_is_kept(fake, provider):
    config = target(fake, settings={"max_output_tokens": 8192})
    await drain(await provider.send(target=config, call=call(max_tokens=1024)))
    assert fake.chat_requests[0]["max_tokens"] == 1024


async def test_organization_and_project_settings_are_openai_headers(fake, provider):
    config = target(fake, kind="openai", settings={"organization": "org-123", "project": "proj_9"})
    await drain(await provider.send(target=config, call=call()))
    headers = {name.lower(): value for name, value in fake.received[0].headers.items()}
    assert (headers["openai-organization"], headers["openai-project"]) == ("org-123", "proj_9")


async def test_a_local_server_without_a_key_gets_no_authorization(provider):
    server = FakeOpenAI(api_key=None).start()
    try:
        config = target(server, api_key="")
        response = await provider.send(target=config, call=call())
        await drain(response)
        assert response.status == 200
        assert "Authorization" not in server.received[0].headers
    finally:
        server.stop()


async def test_the_fake_lists_its_models_to_a_client_with_the_key(fake):
    async with aiohttp.ClientSession() as session:
        headers = {"Authorization": f"Bearer {fake.api_key}"}
        async with session.get(fake.base_url + "/models", headers=headers) as response:
            listed = await response.json()
        async with session.get(fake.base_url + "/models") as refused:
            assert refused.status == 401
    assert [m["id"] for m in listed["data"]] == fake.models


# --- through the forwarding code ----------------------------------------------------------


async def test_an_overloaded_upstream_fails_over_and_the_stream_is_metered_exactly(fake, provider):
    fake.queue(Reply(status=503), CACHED)
    order = [target(fake, name="groq"), target(fake, name="openrouter")]
    providers = {"openai-compatible": provider, "openai": provider}
    outcome, sent = await run_forward(providers, order, call(stream=True))
    assert (sent.status, outcome.attempts, outcome.provider) == (200, 2, "openrouter")
    assert_cached_usage(outcome.tally)
    assert outcome.tally.completed


async def test_a_rejected_gateway_key_reaches_the_client_as_a_gateway_error(fake, provider):
    config = target(fake, api_key="sk-wrong-0123456789abcdef")
    providers = {"openai-compatible": provider, "openai": provider}
    _, sent = await run_forward(providers, [config], call())
    assert sent.status == 502
    assert orjson.loads(sent.body)["error"]["type"] == "api_error"
