"""Whole (non-streamed) replies in both directions, and the stop-reason tables (PROTOCOLS 3.3).

Ids are kept verbatim (`chatcmpl-…` becomes the Anthropic message id, `msg_…` the OpenAI
completion id, tool-call ids both ways). Thinking, server-tool and citation blocks have no
OpenAI form and are dropped; `reasoning_content` some compatible servers add is dropped too
(an unsigned thinking block would be refused if the conversation later reached Anthropic).
"""

from __future__ import annotations

import hashlib
import time
import uuid

from proxy.translate.content import JSON, dump_arguments, parse_arguments, text_block
from proxy.translate.errors import TranslationError
from proxy.translate.tool_names import ToolNames
from proxy.translate.usage import anthropic_usage_to_openai, openai_usage_to_anthropic

FINISH_REASON_BY_STOP_REASON = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
STOP_REASON_BY_FINISH_REASON = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}


def finish_reason_for(stop_reason: object) -> str:
    """Unknown and missing stop reasons read as a normal stop."""
    return FINISH_REASON_BY_STOP_REASON.get(
        stop_reason if isinstance(stop_reason, str) else "", "stop"
    )


def stop_reason_for(finish_reason: object, *, has_tool_calls: bool) -> str:
    """Some servers (Ollama among them) finish a tool call with "stop"; Claude Code only runs
    tools after `tool_use`, so a reply with tool calls that was not cut short is `tool_use`."""
    reason = finish_reason if isinstance(finish_reason, str) else ""
    if has_tool_calls and reason != "length":
        return "tool_use"
    return STOP_REASON_BY_FINISH_REASON.get(reason, "end_turn")


def tool_call_id(message_id: str, index: int) -> str:
    """An id for a tool call a server sent without one: stable for one reply, unique across."""
    digest = hashlib.sha256(f"{message_id}:{index}".encode()).hexdigest()
    return f"toolu_{digest[:24]}"


def new_message_id() -> str:
    return f"msg_{uuid.uuid4().hex[:24]}"


# --- OpenAI-compatible upstream -> Anthropic client -----------------------------------------


def openai_response_to_anthropic(body: JSON, *, tool_names: ToolNames, model: str) -> JSON:
    message, finish_reason = _first_choice(body)
    message_id = str(body.get("id") or new_message_id())
    content: list[JSON] = []
    text = "".join(_openai_texts(message.get("content"))) + _str(message.get("refusal"))
    if text:
        content.append(text_block(text))
    calls = message.get("tool_calls")
    for index, call in enumerate(calls if isinstance(calls, list) else []):
        content.append(_tool_use(call, index, message_id, tool_names))
    usage = body.get("usage")
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason_for(
            finish_reason, has_tool_calls=any(b["type"] == "tool_use" for b in content)
        ),
        "stop_sequence": None,
        "usage": openai_usage_to_anthropic(usage if isinstance(usage, dict) else {}),
    }


def _first_choice(body: object) -> tuple[JSON, object]:
    if not isinstance(body, dict) or not isinstance(body.get("choices"), list):
        raise TranslationError("The upstream provider sent a reply without choices.", status=502)
    choices = body["choices"]
    if not choices or not isinstance(choices[0], dict):
        raise TranslationError("The upstream provider sent no choice.", status=502)
    message = choices[0].get("message")
    return (message if isinstance(message, dict) else {}), choices[0].get("finish_reason")


def _openai_texts(content: object) -> list[str]:
    """`message.content` is a string, but some compatible servers send a list of text parts."""
    if isinstance(content, str):
        return [content]
    if isinstance(content, list):
        return [
            p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)
        ]
    return []


def _str(value: object) -> str:
    return value if isinstance(value, str) else ""


def _tool_use(call: object, index: int, message_id: str, tool_names: ToolNames) -> JSON:
    call = call if isinstance(call, dict) else {}
    function = call.get("function")
    function = function if isinstance(function, dict) else {}
    return {
        "type": "tool_use",
        "id": str(call.get("id") or tool_call_id(message_id, index)),
        "name": tool_names.original(_str(function.get("name"))),
        "input": parse_arguments(function.get("arguments")),
    }


# --- Anthropic upstream -> OpenAI client ----------------------------------------------------


def anthropic_response_to_openai(
    message: JSON, *, model: str | None = None, created: int | None = None
) -> JSON:
    """`model` overrides the reply's model (the name the client asked for); `created` defaults
    to now."""
    blocks = message.get("content")
    blocks = [b for b in blocks if isinstance(b, dict)] if isinstance(blocks, list) else []
    text = "".join(
        b["text"] for b in blocks if b.get("type") == "text" and isinstance(b.get("text"), str)
    )
    calls = [_tool_call(b) for b in blocks if b.get("type") == "tool_use"]
    reply: JSON = {"role": "assistant", "content": text or (None if calls else ""), "refusal": None}
    if calls:
        reply["tool_calls"] = calls
    usage = message.get("usage")
    return {
        "id": str(message.get("id") or ""),
        "object": "chat.completion",
        "created": created if created is not None else int(time.time()),
        "model": model or str(message.get("model") or ""),
        "choices": [
            {
                "index": 0,
                "message": reply,
                "logprobs": None,
                "finish_reason": finish_reason_for(message.get("stop_reason")),
            }
        ],
        "usage": anthropic_usage_to_openai(usage if isinstance(usage, dict) else {}),
    }


def _tool_call(block: JSON) -> JSON:
    return {
        "id": str(block.get("id") or ""),
        "type": "function",
        "function": {
            "name": _str(block.get("name")),
            "arguments": dump_arguments(block.get("input")),
        },
    }
