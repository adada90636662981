"""An OpenAI Chat Completions stream -> an Anthropic Messages stream (PROTOCOLS 1.4, 3.5).

    converter = OpenAIStreamToAnthropic(tool_names, model)
    for chunk in upstream: send(converter.feed(chunk))   # any byte chunking
    send(converter.close())                             # when the upstream body ends

What is sent:
- `message_start` when the first chunk arrives (id = the chunk's id), with zero usage; the
  real numbers come in the final `message_delta.usage` (input, cache read and write, output:
  the Anthropic schema allows them there and the gateway's UsageTally overwrites with them).
- text (and `refusal` text) as one text block, streamed as it comes.
- tool calls are collected and sent when the reply ends, each as `content_block_start`
  (tool_use, original name restored) + one `input_json_delta` holding the whole arguments +
  `content_block_stop`, in tool-call index order. Collecting them makes the JSON always valid
  (malformed arguments are wrapped, see content.parse_arguments) and copes with servers that
  interleave the fragments of parallel calls. Text arriving after a tool call follows them.
- `message_delta` (stop reason, usage) + `message_stop` on `data: [DONE]`, or when the body ends
  after a finish reason (some servers send no [DONE]).
- keep-alive comments (`: …`) become `ping` events once the message has started.
- `data: {"error": …}` becomes an `error` event and ends the conversion.
- A body that ends with no finish reason was cut short: `close()` sends the usage seen so far
  (if any) in a `message_delta` without a stop reason, then an `error` event (api_error), and
  closes no blocks: a client must not take a truncated reply for a complete one.
Nothing is sent before the first upstream chunk (`started`), so a caller can still fail over.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import orjson

from proxy.translate.content import JSON, parse_arguments
from proxy.translate.errors import UPSTREAM_CUT_SHORT, openai_stream_error_to_anthropic
from proxy.translate.responses import new_message_id, stop_reason_for, tool_call_id
from proxy.translate.sse import Frame, StreamConverter, anthropic_event, json_object
from proxy.translate.tool_names import ToolNames
from proxy.translate.usage import openai_usage_to_anthropic, zero_anthropic_usage


@dataclass
class _ToolCall:
    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)


class OpenAIStreamToAnthropic(StreamConverter):
    def __init__(self, tool_names: ToolNames, model: str) -> None:
        super().__init__()
        self._names = tool_names
        self._model = model
        self._message_id = ""
        self._next_block = 0
        self._text_block: int | None = None  # index of the open text block
        self._calls: dict[int, _ToolCall] = {}
        self._late_text: list[str] = []  # text after the first tool call
        self._sent_tool_use = False
        self._finish_reason: str | None = None
        self._usage: JSON | None = None

    @property
    def usage_seen(self) -> bool:
        """False when the upstream never reported usage (no include_usage chunk arrived)."""
        return self._usage is not None

    def _body_ended(self, out: bytearray) -> None:
        if self._finish_reason is not None:
            self._finish(out)  # some servers send no [DONE]
        else:
            self._fail(
                out,
                {"type": "error", "error": {"type": "api_error", "message": UPSTREAM_CUT_SHORT}},
            )

    # --- frames -----------------------------------------------------------------------------

    def _frame(self, frame: Frame, out: bytearray) -> None:
        if self.finished:
            return
        if frame.comment:
            if self.started:
                out += anthropic_event({"type": "ping"})
            return
        if frame.data.strip() == "[DONE]":
            self._finish(out)
            return
        chunk = json_object(frame.data)
        if chunk is None:
            return
        if frame.event == "error" or ("error" in chunk and not chunk.get("choices")):
            self._fail(out, openai_stream_error_to_anthropic(chunk.get("error", chunk)))
            return
        self._chunk(chunk, out)

    def _chunk(self, chunk: JSON, out: bytearray) -> None:
        if not self.started:
            self._start(str(chunk.get("id") or ""), out)
        usage = chunk.get("usage")
        groq = chunk.get("x_groq")  # Groq's own place for usage, before include_usage existed
        if not isinstance(usage, dict) and isinstance(groq, dict):
            usage = groq.get("usage")
        if isinstance(usage, dict):
            self._usage = usage  # cumulative where servers repeat it: the last one wins
        choices = chunk.get("choices")
        for choice in choices if isinstance(choices, list) else []:
            if isinstance(choice, dict) and choice.get("index", 0) == 0:
                self._choice(choice, out)

    def _choice(self, choice: JSON, out: bytearray) -> None:
        delta = choice.get("delta")
        delta = delta if isinstance(delta, dict) else {}
        for key in ("content", "refusal"):
            piece = delta.get(key)
            if isinstance(piece, str) and piece:
                self._text(piece, out)
        calls = delta.get("tool_calls")
        for call in calls if isinstance(calls, list) else []:
            if isinstance(call, dict):
                self._tool_fragment(call, out)
        if isinstance(choice.get("finish_reason"), str):
            self._finish_reason = choice["finish_reason"]

    # --- blocks -----------------------------------------------------------------------------

    def _start(self, upstream_id: str, out: bytearray) -> None:
        self.started = True
        self._message_id = upstream_id or new_message_id()
        message: JSON = {
            "id": self._message_id,
            "type": "message",
            "role": "assistant",
            "model": self._model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": zero_anthropic_usage(),
        }
        out += anthropic_event({"type": "message_start", "message": message})

    def _text(self, piece: str, out: bytearray) -> None:
        if self._calls:
            self._late_text.append(piece)
            return
        if self._text_block is None:
            self._text_block = self._open({"type": "text", "text": ""}, out)
        delta = {"type": "text_delta", "text": piece}
        out += anthropic_event(
            {"type": "content_block_delta", "index": self._text_block, "delta": delta}
        )

    def _tool_fragment(self, fragment: JSON, out: bytearray) -> None:
        index = fragment.get("index")
        if not isinstance(index, int) or isinstance(index, bool):
            # A server that leaves out the index sends one whole call per fragment with an id.
            index = len(self._calls) if fragment.get("id") or not self._calls else max(self._calls)
        self._close_text(out)
        call = self._calls.setdefault(index, _ToolCall())
        if isinstance(fragment.get("id"), str) and not call.id:
            call.id = fragment["id"]
        function = fragment.get("function")
        function = function if isinstance(function, dict) else {}
        if isinstance(function.get("name"), str) and not call.name:
            call.name = function["name"]
        if isinstance(function.get("arguments"), str):
            call.arguments.append(function["arguments"])

    def _open(self, content_block: JSON, out: bytearray) -> int:
        index = self._next_block
        self._next_block += 1
        out += anthropic_event(
            {"type": "content_block_start", "index": index, "content_block": content_block}
        )
        return index

    def _close_text(self, out: bytearray) -> None:
        if self._text_block is not None:
            out += anthropic_event({"type": "content_block_stop", "index": self._text_block})
            self._text_block = None

    def _flush_tool_calls(self, out: bytearray) -> None:
        for position, index in enumerate(sorted(self._calls)):
            call = self._calls[index]
            block = {
                "type": "tool_use",
                "id": call.id or tool_call_id(self._message_id, position),
                "name": self._names.original(call.name),
                "input": {},
            }
            block_index = self._open(block, out)
            arguments = parse_arguments("".join(call.arguments))
            if arguments:
                delta = {
                    "type": "input_json_delta",
                    "partial_json": orjson.dumps(arguments).decode(),
                }
                out += anthropic_event(
                    {"type": "content_block_delta", "index": block_index, "delta": delta}
                )
            out += anthropic_event({"type": "content_block_stop", "index": block_index})
            self._sent_tool_use = True
        self._calls.clear()
        late, self._late_text = "".join(self._late_text), []
        if late:
            self._text(late, out)
            self._close_text(out)

    # --- the end ----------------------------------------------------------------------------

    def _finish(self, out: bytearray) -> None:
        if not self.started:
            self._start("", out)
        self._close_text(out)
        self._flush_tool_calls(out)
        stop_reason = stop_reason_for(self._finish_reason, has_tool_calls=self._sent_tool_use)
        usage = openai_usage_to_anthropic(self._usage or {})
        out += anthropic_event(
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                "usage": usage,
            }
        )
        out += anthropic_event({"type": "message_stop"})
        self.finished = True

    def _fail(self, out: bytearray, error_event: JSON) -> None:
        if self._usage is not None:
            usage = openai_usage_to_anthropic(self._usage)
            out += anthropic_event(
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": None, "stop_sequence": None},
                    "usage": usage,
                }
            )
        out += anthropic_event(error_event)
        self.finished = True
