"""An Anthropic Messages stream -> an OpenAI Chat Completions stream (PROTOCOLS 3.5).

    converter = AnthropicStreamToOpenAI(include_usage=wants_usage(request), model=requested)
    for chunk in upstream: send(converter.feed(chunk))   # any byte chunking
    send(converter.close())                             # when the upstream body ends

What is sent (every chunk `chat.completion.chunk`, id = the Anthropic message id):
- `message_start` -> the role chunk (`{"role": "assistant", "content": ""}`).
- `text_delta` -> `delta.content`.
- a `tool_use` block -> a header chunk (`tool_calls[{index, id, type, function: {name,
  arguments: ""}}]`, index = the tool call's ordinal, not the block index), then each
  `input_json_delta` as an `arguments` fragment.
- `message_stop` -> a chunk with the finish reason (from the last `message_delta`), then, only
  if the client asked (`stream_options.include_usage`), the usage chunk (`choices: []`; while
  it is on, every other chunk carries `usage: null`, as OpenAI does), then `data: [DONE]`.
- dropped: `ping`, thinking and signature deltas, citations, server-tool blocks.
- an `error` event -> `data: {"error": {...}}` and nothing after it (no [DONE]: the OpenAI SDK
  raises on the error chunk).
- a body that ends after a stop reason but before `message_stop` is finished normally; one that
  ends earlier gets an error chunk, since an OpenAI client would otherwise take the truncated
  reply for a complete one.
"""

from __future__ import annotations

import time
from typing import Any

from proxy.translate.content import JSON, dump_arguments
from proxy.translate.errors import UPSTREAM_CUT_SHORT, openai_error_for
from proxy.translate.responses import finish_reason_for
from proxy.translate.sse import OPENAI_DONE, Frame, StreamConverter, json_object, openai_data
from proxy.translate.usage import anthropic_usage_to_openai

_USAGE_FIELDS = (
    "input_tokens",
    "output_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
    "output_tokens_details",
)


class AnthropicStreamToOpenAI(StreamConverter):
    def __init__(self, *, include_usage: bool, model: str, created: int | None = None) -> None:
        super().__init__()
        self._include_usage = include_usage
        self._model = model
        self._created = created if created is not None else int(time.time())
        self._id = ""
        self._tool_index_by_block: dict[int, int] = {}
        self._usage: JSON = {}
        self._stop_reason: str | None = None

    def _body_ended(self, out: bytearray) -> None:
        if self._stop_reason is not None:
            self._finish(out)  # the body ended between the stop reason and message_stop
        else:
            self._fail(out, openai_error_for("api_error", UPSTREAM_CUT_SHORT))

    def _frame(self, frame: Frame, out: bytearray) -> None:
        if self.finished or frame.comment:
            return
        event = json_object(frame.data)
        if event is None:
            return
        handler = _HANDLERS.get(str(event.get("type") or frame.event))
        if handler is not None:
            handler(self, event, out)

    # --- events -----------------------------------------------------------------------------

    def _message_start(self, event: JSON, out: bytearray) -> None:
        message = event.get("message")
        message = message if isinstance(message, dict) else {}
        self._id = str(message.get("id") or "")
        self._overwrite_usage(message.get("usage"))
        self._role_chunk(out)

    def _block_start(self, event: JSON, out: bytearray) -> None:
        block = event.get("content_block")
        block = block if isinstance(block, dict) else {}
        if block.get("type") == "text" and block.get("text"):
            out += self._chunk({"content": block["text"]})
        if block.get("type") != "tool_use":
            return
        ordinal = len(self._tool_index_by_block)
        self._tool_index_by_block[_index(event)] = ordinal
        header = {
            "index": ordinal,
            "id": str(block.get("id") or ""),
            "type": "function",
            "function": {"name": str(block.get("name") or ""), "arguments": ""},
        }
        out += self._chunk({"tool_calls": [header]})
        if block.get("input"):  # Anthropic starts with {}; a non-empty start is sent as is
            self._arguments(ordinal, dump_arguments(block["input"]), out)

    def _block_delta(self, event: JSON, out: bytearray) -> None:
        delta = event.get("delta")
        delta = delta if isinstance(delta, dict) else {}
        kind = delta.get("type")
        if kind == "text_delta" and isinstance(delta.get("text"), str) and delta["text"]:
            out += self._chunk({"content": delta["text"]})
        elif kind == "input_json_delta":
            ordinal = self._tool_index_by_block.get(_index(event))
            fragment = delta.get("partial_json")
            if ordinal is not None and isinstance(fragment, str) and fragment:
                self._arguments(ordinal, fragment, out)

    def _message_delta(self, event: JSON, out: bytearray) -> None:
        delta = event.get("delta")
        if isinstance(delta, dict) and isinstance(delta.get("stop_reason"), str):
            self._stop_reason = delta["stop_reason"]
        self._overwrite_usage(event.get("usage"))

    def _message_stop(self, event: JSON, out: bytearray) -> None:
        self._finish(out)

    def _error(self, event: JSON, out: bytearray) -> None:
        error = event.get("error")
        error = error if isinstance(error, dict) else {}
        message = error.get("message")
        self._fail(
            out,
            openai_error_for(
                str(error.get("type") or "api_error"),
                message if isinstance(message, str) and message else "The upstream stream failed.",
            ),
        )

    # --- output -----------------------------------------------------------------------------

    def _overwrite_usage(self, usage: object) -> None:
        """Cumulative values: every non-null one replaces the last (PROTOCOLS 1.4)."""
        if isinstance(usage, dict):
            for key in _USAGE_FIELDS:
                if usage.get(key) is not None:
                    self._usage[key] = usage[key]

    def _chunk(self, delta: JSON, finish_reason: str | None = None) -> bytes:
        payload: JSON = {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self._model,
            "choices": [
                {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            ],
        }
        if self._include_usage:
            payload["usage"] = None
        return openai_data(payload)

    def _role_chunk(self, out: bytearray) -> None:
        if not self.started:
            self.started = True
            out += self._chunk({"role": "assistant", "content": ""})

    def _arguments(self, ordinal: int, fragment: str, out: bytearray) -> None:
        out += self._chunk(
            {"tool_calls": [{"index": ordinal, "function": {"arguments": fragment}}]}
        )

    def _finish(self, out: bytearray) -> None:
        self._role_chunk(out)
        out += self._chunk({}, finish_reason_for(self._stop_reason))
        if self._include_usage:
            out += openai_data(
                {
                    "id": self._id,
                    "object": "chat.completion.chunk",
                    "created": self._created,
                    "model": self._model,
                    "choices": [],
                    "usage": anthropic_usage_to_openai(self._usage),
                }
            )
        out += OPENAI_DONE
        self.finished = True

    def _fail(self, out: bytearray, error: dict[str, Any]) -> None:
        out += openai_data({"error": error})
        self.finished = True


def _index(event: JSON) -> int:
    index = event.get("index")
    return index if isinstance(index, int) else -1


_HANDLERS = {
    "message_start": AnthropicStreamToOpenAI._message_start,
    "content_block_start": AnthropicStreamToOpenAI._block_start,
    "content_block_delta": AnthropicStreamToOpenAI._block_delta,
    "message_delta": AnthropicStreamToOpenAI._message_delta,
    "message_stop": AnthropicStreamToOpenAI._message_stop,
    "error": AnthropicStreamToOpenAI._error,
}
