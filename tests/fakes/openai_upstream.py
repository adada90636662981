"""A fake OpenAI-compatible server on 127.0.0.1: `POST /v1/chat/completions` (JSON and SSE) and
`GET /v1/models`, in OpenAI's wire format, with fault injection.

Every request must carry `Authorization: Bearer <api_key>` (401 `invalid_api_key` otherwise,
unless `api_key` is None, as for a local server). Requests are checked the way OpenAI checks
them (a model, messages OpenAI accepts, a `tool` message only after the assistant message
that made the call, max_tokens under `max_tokens_limit` when set) and refused with OpenAI's
400 body otherwise. Every request is recorded.

What a request gets: the next queued `Reply`, else `default`. A reply's `text` and
`tool_calls` left as None follow a script that lets a real agent (Claude Code) complete a
two-turn task:
- the turn answers tool results (a `tool` message after the last assistant message):
  text "The tool returned: <the result>";
- the last user text says `call tool NAME with {JSON}` and NAME is an offered tool: that
  tool call, finish_reason "tool_calls";
- anything else: an echo, "Hello from the fake OpenAI upstream (MODEL). You said: …".

Streams are OpenAI's: `delta.role` first, content deltas, tool-call fragments (id, type and
name in the first of each call, arguments split), a chunk with the finish_reason, then (with
`stream_options.include_usage`) the usage chunk with `choices: []`, then `data: [DONE]`.
Usage carries `prompt_tokens_details.cached_tokens` (a part of prompt_tokens, as OpenAI's).
Faults: an error status with OpenAI's error body (and retry-after), `data: {"error": …}`
mid-stream, a dropped connection, no usage, no [DONE], a slow or held stream, JSON for a
stream.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.fakes.server import FakeServer, JsonBody

CHARS_PER_TOKEN = 4
TOOL_TRIGGER = "call tool "


@dataclass
class ToolCall:
    name: str
    arguments: dict[str, Any] | str = field(default_factory=dict)  # a str is sent verbatim
    id: str | None = None  # default: call_fake_<n>


@dataclass
class Reply:
    status: int = 200
    text: str | None = None  # None (and tool_calls None): the script
    tool_calls: list[ToolCall] | None = None
    model: str | None = None  # the served model; defaults to the requested one
    prompt_tokens: int | None = None  # default: the request's text, 4 characters a token
    completion_tokens: int | None = None  # default: words of text + argument characters / 4
    cached_tokens: int = 0  # of prompt_tokens
    reasoning_tokens: int = 0  # of completion_tokens
    finish_reason: str | None = None  # default: "tool_calls" with tool calls, else "stop"
    usage: bool = True  # False: no usage object, no include_usage chunk
    error_type: str = "server_error"
    error_code: str | None = None
    error_message: str = "The server had an error while processing your request."
    retry_after: str | None = None
    stream_error_after: int | None = None  # chunks sent before a `data: {"error": …}`
    drop_after: int | None = None  # chunks sent before the connection is cut
    chunk_delay: float = 0.0
    deltas: int = 3  # content chunks the text is split into
    done: bool = True  # False: the stream ends without `data: [DONE]`
    ignore_stream: bool = False  # answer a stream request with a JSON completion
    hold_after: int | None = None  # chunks sent before waiting for FakeOpenAI.gate


@dataclass
class Received(JsonBody):
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


# --- the script ----------------------------------------------------------------------------


def _texts(content: Any) -> list[str]:
    if isinstance(content, str):
        return [content]
    if isinstance(content, list):
        return [str(p.get("text", "")) for p in content if isinstance(p, dict)]
    return []


def _current_turn(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The messages after the last assistant message: what the reply answers."""
    for index in range(len(messages) - 1, -1, -1):
        if messages[index].get("role") == "assistant":
            return messages[index + 1 :]
    return messages


def _requested_call(text: str, offered: set[str]) -> ToolCall | None:
    """`call tool NAME with {JSON}` anywhere in the text, for an offered tool."""
    start = text.rfind(TOOL_TRIGGER)
    if start < 0:
        return None
    name, _, rest = text[start + len(TOOL_TRIGGER) :].partition(" with ")
    if name.strip() not in offered or "{" not in rest:
        return None
    try:
        arguments, _ = json.JSONDecoder().raw_decode(rest[rest.index("{") :])
    except json.JSONDecodeError:
        return None
    return ToolCall(name.strip(), arguments) if isinstance(arguments, dict) else None


def scripted(request: dict[str, Any], model: str) -> tuple[str, list[ToolCall]]:
    turn = _current_turn(request.get("messages") or [])
    results = [m for m in turn if m.get("role") == "tool"]
    if results:
        said = " ".join(" ".join(_texts(results[-1].get("content"))).split())[:200]
        return f"The tool returned: {said}", []
    texts = [t for m in turn if m.get("role") == "user" for t in _texts(m.get("content"))]
    offered = {str(t.get("function", {}).get("name")) for t in request.get("tools") or [] if t}
    for text in reversed(texts):
        call = _requested_call(text, offered)
        if call is not None:
            return "", [call]
    said = " ".join((texts[-1] if texts else "").split()[-8:])
    return f"Hello from the fake OpenAI upstream ({model}). You said: {said}", []


def prompt_tokens_of(request: dict[str, Any]) -> int:
    chars = sum(
        len(text) for m in request.get("messages") or [] for text in _texts(m.get("content"))
    )
    return max(1, chars // CHARS_PER_TOKEN)


def check_request(request: dict[str, Any], max_tokens_limit: int | None) -> str | None:
    """What OpenAI would refuse in the request, as its error message, or None."""
    if not isinstance(request.get("model"), str) or not request["model"]:
        return "you must provide a model parameter"
    messages = request.get("messages")
    if not isinstance(messages, list) or not messages:
        return "'messages' must contain at least one message"
    for key in ("max_tokens", "max_completion_tokens"):
        value = request.get(key)
        if max_tokens_limit is not None and isinstance(value, int) and value > max_tokens_limit:
            return f"`{key}` must be less than or equal to `{max_tokens_limit}`, got {value}"
    return check_messages(messages)


def check_messages(messages: list[dict[str, Any]]) -> str | None:
    pending: set[str] = set()  # ids of the tool calls the last assistant message made
    for index, message in enumerate(messages):
        role = message.get("role")
        if role not in ("system", "developer", "user", "assistant", "tool"):
            return f"Invalid value for 'messages[{index}].role': {role!r}"
        if role == "tool":
            if message.get("tool_call_id") not in pending:
                return (
                    "Invalid parameter: messages with role 'tool' must be a response to a "
                    "preceeding message with 'tool_calls'."
                )
            pending.discard(message["tool_call_id"])
            continue
        calls = (message.get("tool_calls") or []) if role == "assistant" else []
        pending = {call["id"] for call in calls}
        content = message.get("content")
        for part in content if isinstance(content, list) else []:
            if part.get("type") not in ("text", "image_url", "file", "refusal"):
                return f"Invalid content part type in messages[{index}]: {part.get('type')!r}"
    return None


# --- the server ----------------------------------------------------------------------------


@dataclass
class FakeOpenAI(FakeServer[Reply]):
    api_key: str | None = "sk-fake-openai-0123456789abcdef"
    default: Reply = field(default_factory=Reply)
    models: list[str] = field(default_factory=lambda: ["gpt-4o-mini", "llama-3.3-70b-versatile"])
    max_tokens_limit: int | None = None
    gate: threading.Event = field(default_factory=threading.Event)
    received: list[Received] = field(default_factory=list)
    cancelled: int = 0
    _calls: int = 0

    thread_name = "fake-openai"

    @property
    def base_url(self) -> str:
        """As OpenAI clients take it: with /v1."""
        return f"http://127.0.0.1:{self.port}/v1"

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/chat/completions", self._completions)
        app.router.add_get("/v1/models", self._models)

    @property
    def chat_requests(self) -> list[dict[str, Any]]:
        return [r.json for r in self.received if r.path.endswith("/chat/completions")]

    # --- wire format ---------------------------------------------------------------------

    @staticmethod
    def error(
        status: int,
        message: str,
        *,
        error_type: str = "invalid_request_error",
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> web.Response:
        body = {"error": {"message": message, "type": error_type, "param": None, "code": code}}
        return web.json_response(body, status=status, headers=headers)

    def _authorized(self, request: web.Request) -> bool:
        return self.api_key is None or request.headers.get("Authorization") == (
            f"Bearer {self.api_key}"
        )

    def _refused_key(self) -> web.Response:
        return self.error(
            401,
            "Incorrect API key provided: sk-wrong****cdef. You can find your API key at "
            "https://platform.openai.com/account/api-keys.",
            code="invalid_api_key",
        )

    def _record(self, request: web.Request, body: bytes) -> None:
        self.received.append(Received(request.method, request.path, dict(request.headers), body))

    async def _models(self, request: web.Request) -> web.Response:
        self._record(request, b"")
        if not self._authorized(request):
            return self._refused_key()
        data = [
            {"id": m, "object": "model", "created": 1_700_000_000, "owned_by": "fake"}
            for m in self.models
        ]
        return web.json_response({"object": "list", "data": data})

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self._record(request, body)
        if not self._authorized(request):
            return self._refused_key()
        reply = self.next_reply()
        try:
            payload = json.loads(body)
        except json.JSONDecodeError:
            return self.error(400, "We could not parse the JSON body of your request.")
        problem = check_request(payload, self.max_tokens_limit)
        if problem is not None:
            return self.error(400, problem)
        if reply.status != 200:
            headers = {"x-request-id": "req_fake_openai_error"}
            if reply.retry_after is not None:
                headers["retry-after"] = reply.retry_after
            return self.error(
                reply.status,
                reply.error_message,
                error_type=reply.error_type,
                code=reply.error_code,
                headers=headers,
            )
        self._calls += 1
        answer = _Answer.of(payload, reply, self._calls)
        if payload.get("stream") and not reply.ignore_stream:
            return await self._stream(request, payload, reply, answer)
        return web.json_response(answer.completion(), headers=self._headers())

    def _headers(self) -> dict[str, str]:
        return {
            "x-request-id": f"req_fake_openai_{self._calls}",
            "x-ratelimit-limit-requests": "500",
            "x-ratelimit-remaining-requests": "499",
            "x-ratelimit-reset-requests": "120ms",
            "x-ratelimit-limit-tokens": "30000",
            "x-ratelimit-remaining-tokens": "29000",
            "x-ratelimit-reset-tokens": "2s",
        }

    async def _stream(
        self, request: web.Request, payload: dict[str, Any], reply: Reply, answer: _Answer
    ) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"content-type": "text/event-stream; charset=utf-8", **self._headers()}
        )
        await response.prepare(request)
        options = payload.get("stream_options") or {}
        include_usage = bool(options.get("include_usage")) and reply.usage
        try:
            for sent, chunk in enumerate(answer.chunks(include_usage=include_usage)):
                if reply.stream_error_after is not None and sent == reply.stream_error_after:
                    error = {"message": reply.error_message, "type": reply.error_type}
                    await response.write(
                        b"data: " + json.dumps({"error": error}).encode() + b"\n\n"
                    )
                    return response
                if reply.drop_after is not None and sent == reply.drop_after:
                    assert request.transport is not None
                    request.transport.abort()
                    return response
                if reply.hold_after is not None and sent == reply.hold_after:
                    await asyncio.get_running_loop().run_in_executor(None, self.gate.wait, 10)
                await response.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
                if reply.chunk_delay:
                    await asyncio.sleep(reply.chunk_delay)
            if reply.done:
                await response.write(b"data: [DONE]\n\n")
        except (ConnectionResetError, asyncio.CancelledError):
            self.cancelled += 1
            raise
        return response


@dataclass
class _Answer:
    """One reply's content and usage, rendered as a completion or as stream chunks."""

    id: str
    model: str
    text: str
    tool_calls: list[ToolCall]
    finish_reason: str
    usage: dict[str, Any] | None
    deltas: int

    @classmethod
    def of(cls, request: dict[str, Any], reply: Reply, number: int) -> _Answer:
        model = reply.model or str(request["model"])
        if reply.text is None and reply.tool_calls is None:
            text, calls = scripted(request, model)
        else:
            text, calls = reply.text or "", list(reply.tool_calls or [])
        calls = [
            ToolCall(c.name, c.arguments, c.id or f"call_fake_{number}_{i}")
            for i, c in enumerate(calls)
        ]
        arguments = sum(len(_arguments(c)) for c in calls)
        completion = reply.completion_tokens
        if completion is None:
            completion = len(text.split()) + arguments // CHARS_PER_TOKEN
        prompt = (
            reply.prompt_tokens if reply.prompt_tokens is not None else prompt_tokens_of(request)
        )
        usage = _usage(prompt, completion, reply) if reply.usage else None
        finish = reply.finish_reason or ("tool_calls" if calls else "stop")
        return cls(f"chatcmpl-fake{number}", model, text, calls, finish, usage, reply.deltas)

    def _base(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "created": int(time.time()),
            "model": self.model,
            "system_fingerprint": "fp_fake",
        }

    def completion(self) -> dict[str, Any]:
        message: dict[str, Any] = {
            "role": "assistant",
            "content": self.text or None,
            "refusal": None,
        }
        if self.tool_calls:
            message["tool_calls"] = [
                {
                    "id": c.id,
                    "type": "function",
                    "function": {"name": c.name, "arguments": _arguments(c)},
                }
                for c in self.tool_calls
            ]
        choice = {
            "index": 0,
            "message": message,
            "logprobs": None,
            "finish_reason": self.finish_reason,
        }
        body = {**self._base(), "object": "chat.completion", "choices": [choice]}
        if self.usage is not None:
            body["usage"] = self.usage
        return body

    def chunks(self, *, include_usage: bool) -> list[dict[str, Any]]:
        deltas: list[dict[str, Any]] = [{"role": "assistant", "content": "", "refusal": None}]
        words = self.text.split(" ") if self.text else []
        per_delta = max(1, -(-len(words) // max(self.deltas, 1)))
        for i in range(0, len(words), per_delta):
            piece = " ".join(words[i : i + per_delta])
            deltas.append({"content": piece if i == 0 else " " + piece})
        for index, call in enumerate(self.tool_calls):
            deltas.extend(_call_fragments(index, call))
        extra = {"usage": None} if include_usage else {}
        chunks = [
            {**self._base(), "object": "chat.completion.chunk", **extra, "choices": [_choice(d)]}
            for d in deltas
        ]
        finish = _choice({}, self.finish_reason)
        chunks.append(
            {**self._base(), "object": "chat.completion.chunk", **extra, "choices": [finish]}
        )
        if include_usage and self.usage is not None:
            chunks.append(
                {
                    **self._base(),
                    "object": "chat.completion.chunk",
                    "choices": [],
                    "usage": self.usage,
                }
            )
        return chunks


def _choice(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
    return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}


def _arguments(call: ToolCall) -> str:
    return call.arguments if isinstance(call.arguments, str) else json.dumps(call.arguments)


def _call_fragments(index: int, call: ToolCall) -> list[dict[str, Any]]:
    """The call's header fragment, then its arguments in three pieces (as OpenAI splits them)."""
    header = {"index": index, "id": call.id, "type": "function"}
    fragments = [{"tool_calls": [{**header, "function": {"name": call.name, "arguments": ""}}]}]
    arguments = _arguments(call)
    step = max(1, -(-len(arguments) // 3))
    for start in range(0, len(arguments), step):
        piece = arguments[start : start + step]
        fragments.append({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
    return fragments


def _usage(prompt: int, completion: int, reply: Reply) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": reply.cached_tokens, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": reply.reasoning_tokens,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }
