"""Anthropic Messages request -> OpenAI Chat Completions request (OpenAI-compatible upstreams).

- `system` and any `role: "system"` message inside `messages` (Claude Code sends one) -> one
  leading system message, texts joined by blank lines: many compatible servers' chat templates
  refuse a system message anywhere but first. Claude Code's `x-anthropic-billing-header: …`
  block is Anthropic billing metadata and is left out (it would also defeat prefix caching).
- user blocks: text and images (`image_url` with a data: or https URL), base64 PDFs (`file`
  parts), text documents and search results as text. A user text-only message with one text is
  sent as a string (what every compatible server understands).
- `tool_result` blocks -> one `role: "tool"` message each, before the user's other content;
  `is_error` becomes an "Error: " prefix; images in a result (a tool message holds text only)
  move to the user message that follows; `tool_reference` blocks (Claude Code's tool search)
  become a line naming the tool, which is callable because deferred tools are sent as tools.
- assistant: texts joined -> `content`; `tool_use` -> `tool_calls` (arguments via `json`);
  `thinking`, `redacted_thinking` and server-tool blocks are dropped (no OpenAI equivalent).
- `tools`: client tools -> function tools, names made valid by ToolNames; Anthropic-defined and
  server tools (`web_search_…`, `bash_…`, `text_editor_…`: they have no schema) are dropped.
- `tool_choice`: auto/any/none/tool -> auto/required/none/function; `disable_parallel_tool_use`
  -> `parallel_tool_calls: false`.
- `max_tokens` -> `max_tokens_field` (default `max_tokens`, which vLLM, Ollama, Groq, Mistral and
  OpenAI's non-reasoning models accept; pass `max_completion_tokens` for OpenAI's reasoning
  models), capped at `max_output_tokens` when given.
- `stop_sequences` -> `stop`; `temperature`, `top_p` as sent; `top_k` dropped.
- `stream: true` -> also `stream_options: {"include_usage": true}` (no usage otherwise).
- `metadata.user_id` -> `user`, as a SHA-256 hex digest when longer than 64 characters (Claude
  Code sends a JSON string with device and session ids).
- `output_config.format` (json_schema) -> `response_format`; `output_config.effort`,
  `thinking`, `context_management`, `cache_control`, `container`, `service_tier`,
  `inference_geo`, `safeguards` and other Anthropic-only fields are dropped; non-empty
  `mcp_servers` is refused (400): those tools would silently vanish.
"""

from __future__ import annotations

import hashlib
from typing import Literal

from proxy.translate.content import JSON, dump_arguments, has_text, source_to_image_url
from proxy.translate.errors import TranslationError
from proxy.translate.tool_names import ToolNames

BILLING_HEADER_PREFIX = "x-anthropic-billing-header:"
TOOL_ERROR_PREFIX = "Error: "
MAX_USER_CHARS = 64
_CLIENT_TOOL_TYPES = (None, "custom")


def anthropic_request_to_openai(
    body: JSON,
    *,
    model: str,
    max_tokens_field: Literal["max_tokens", "max_completion_tokens"] = "max_tokens",
    max_output_tokens: int | None = None,
) -> tuple[JSON, ToolNames]:
    names = ToolNames()
    tools = _tools(body.get("tools"), names)
    system, messages = _messages(body.get("messages"), names)
    system = _system_texts(body.get("system"), "system") + system
    if system:
        messages.insert(0, {"role": "system", "content": "\n\n".join(system)})
    result: JSON = {"model": model, "messages": messages}
    result[max_tokens_field] = _max_tokens(body.get("max_tokens"), max_output_tokens)
    if tools:
        result["tools"] = tools
        _tool_choice(body.get("tool_choice"), names, result)
    _sampling(body, result)
    _user(body.get("metadata"), result)
    _response_format(body.get("output_config"), result)
    if body.get("mcp_servers"):
        raise TranslationError(
            "mcp_servers (the MCP connector) is not available on this provider.",
            param="mcp_servers",
        )
    if body.get("stream") is True:
        result["stream"] = True
        result["stream_options"] = {"include_usage": True}
    return result, names


# --- plain fields ---------------------------------------------------------------------------


def _max_tokens(value: object, cap: int | None) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise TranslationError("max_tokens must be a positive integer.", param="max_tokens")
    return min(value, cap) if cap else value


def _sampling(body: JSON, result: JSON) -> None:
    for field in ("temperature", "top_p"):
        value = body.get(field)
        if isinstance(value, int | float) and not isinstance(value, bool):
            result[field] = value
    stop = body.get("stop_sequences")
    if isinstance(stop, list) and stop:
        result["stop"] = [s for s in stop if isinstance(s, str)]


def _user(metadata: object, result: JSON) -> None:
    user_id = metadata.get("user_id") if isinstance(metadata, dict) else None
    if not isinstance(user_id, str) or not user_id:
        return
    if len(user_id) > MAX_USER_CHARS:
        user_id = hashlib.sha256(user_id.encode()).hexdigest()
    result["user"] = user_id


def _response_format(output_config: object, result: JSON) -> None:
    spec = output_config.get("format") if isinstance(output_config, dict) else None
    if isinstance(spec, dict) and spec.get("type") == "json_schema":
        result["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "response", "schema": spec.get("schema"), "strict": True},
        }


# --- tools ----------------------------------------------------------------------------------


def _tools(raw: object, names: ToolNames) -> list[JSON]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise TranslationError("tools must be a list.", param="tools")
    tools = []
    for i, tool in enumerate(raw):
        if not isinstance(tool, dict) or tool.get("type") not in _CLIENT_TOOL_TYPES:
            continue
        if not isinstance(tool.get("name"), str):
            raise TranslationError(f"tools[{i}].name is required.", param=f"tools[{i}]")
        schema = tool.get("input_schema")
        function: JSON = {
            "name": names.to_openai(tool["name"]),
            "parameters": schema if isinstance(schema, dict) else {"type": "object"},
        }
        if isinstance(tool.get("description"), str):
            function["description"] = tool["description"]
        if tool.get("strict") is True:
            function["strict"] = True
        tools.append({"type": "function", "function": function})
    return tools


def _tool_choice(raw: object, names: ToolNames, result: JSON) -> None:
    if not isinstance(raw, dict):
        return
    kind = raw.get("type")
    simple = {"auto": "auto", "any": "required", "none": "none"}
    if kind in simple:
        result["tool_choice"] = simple[str(kind)]
    elif kind == "tool" and isinstance(raw.get("name"), str):
        name = names.to_openai(raw["name"])
        result["tool_choice"] = {"type": "function", "function": {"name": name}}
    if raw.get("disable_parallel_tool_use") is True and kind != "none":
        result["parallel_tool_calls"] = False


# --- messages -------------------------------------------------------------------------------


def _system_texts(system: object, where: str) -> list[str]:
    if isinstance(system, str):
        return [system] if has_text(system) else []
    if system is None:
        return []
    if not isinstance(system, list):
        raise TranslationError(f"{where} must be a string or a list of blocks.", param=where)
    texts = []
    for block in system:
        text = block.get("text") if isinstance(block, dict) else None
        if isinstance(text, str) and has_text(text) and not text.startswith(BILLING_HEADER_PREFIX):
            texts.append(text)
    return texts


def _messages(raw: object, names: ToolNames) -> tuple[list[str], list[JSON]]:
    """(system texts found among the messages, OpenAI messages)."""
    if not isinstance(raw, list) or not raw:
        raise TranslationError("messages must be a non-empty list.", param="messages")
    system: list[str] = []
    messages: list[JSON] = []
    for i, message in enumerate(raw):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise TranslationError(f"{where} must be an object.", param=where)
        role = message.get("role")
        blocks = _blocks(message.get("content"), where)
        if role == "system":
            system.extend(_system_texts(blocks, where))
        elif role == "user":
            messages.extend(_user_messages(blocks, names, where))
        elif role == "assistant":
            messages.extend(_assistant_message(blocks, names))
        else:
            raise TranslationError(f"{where}: role {role!r} is not supported.", param=where)
    return system, messages


def _blocks(content: object, where: str) -> list[JSON]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if not isinstance(content, list):
        raise TranslationError(f"{where}.content must be a string or a list.", param=where)
    return [block for block in content if isinstance(block, dict)]


def _user_messages(blocks: list[JSON], names: ToolNames, where: str) -> list[JSON]:
    messages: list[JSON] = []
    moved: list[JSON] = []  # images from tool results, for the user message that follows
    parts: list[JSON] = []
    for j, block in enumerate(blocks):
        if block.get("type") == "tool_result":
            tool_message, images = _tool_message(block, names, f"{where}.content[{j}]")
            messages.append(tool_message)
            moved.extend(images)
        else:
            parts.extend(_user_parts(block, names, f"{where}.content[{j}]"))
    parts = moved + parts
    if parts:
        messages.append({"role": "user", "content": _user_content(parts)})
    return messages


def _user_content(parts: list[JSON]) -> str | list[JSON]:
    if len(parts) == 1 and parts[0]["type"] == "text":
        return str(parts[0]["text"])
    return parts


def _user_parts(block: JSON, names: ToolNames, where: str) -> list[JSON]:
    kind = block.get("type")
    if kind == "image":
        url = source_to_image_url(block.get("source"), where=where)
        return [{"type": "image_url", "image_url": {"url": url}}]
    if kind == "document":
        return [_document_part(block, where)]
    text = _block_text(block, names)
    return [{"type": "text", "text": text}] if has_text(text) else []


def _block_text(block: JSON, names: ToolNames) -> str:
    """The text of a text-like block; "" for blocks with no text an OpenAI model could use."""
    kind = block.get("type")
    if kind in ("thinking", "redacted_thinking"):
        return ""
    if kind == "tool_reference" and isinstance(block.get("tool_name"), str):
        return f"Tool available: {names.to_openai(block['tool_name'])}"
    if kind == "search_result":
        inner = block.get("content")
        texts = (
            [b.get("text") for b in inner if isinstance(b, dict)] if isinstance(inner, list) else []
        )
        return "\n\n".join(
            [str(block.get("title") or "")] + [t for t in texts if isinstance(t, str)]
        )
    text = block.get("text")
    return text if isinstance(text, str) else ""


def _document_part(block: JSON, where: str) -> JSON:
    source = block.get("source")
    source = source if isinstance(source, dict) else {}
    if source.get("type") == "text" and isinstance(source.get("data"), str):
        return {"type": "text", "text": source["data"]}
    if source.get("type") == "base64" and source.get("media_type") == "application/pdf":
        title = block.get("title")
        return {
            "type": "file",
            "file": {
                "filename": title if isinstance(title, str) and title else "document.pdf",
                "file_data": f"data:application/pdf;base64,{source.get('data')}",
            },
        }
    raise TranslationError(
        f"{where}: only base64 PDF and text documents can be sent to this provider.", param=where
    )


def _tool_message(block: JSON, names: ToolNames, where: str) -> tuple[JSON, list[JSON]]:
    content = block.get("content")
    texts: list[str] = []
    images: list[JSON] = []
    for inner in _blocks(content, where) if content is not None else []:
        if inner.get("type") == "image":
            images.extend(_user_parts(inner, names, where))
        else:
            text = _block_text(inner, names)
            if text:
                texts.append(text)
    text = "\n\n".join(texts)
    if block.get("is_error") is True:
        text = TOOL_ERROR_PREFIX + text
    tool_use_id = str(block.get("tool_use_id") or "")
    if images:
        note = {"type": "text", "text": f"Images returned by tool call {tool_use_id}:"}
        images = [note, *images]
    return {"role": "tool", "tool_call_id": tool_use_id, "content": text}, images


def _assistant_message(blocks: list[JSON], names: ToolNames) -> list[JSON]:
    texts = [
        b["text"] for b in blocks if b.get("type") == "text" and isinstance(b.get("text"), str)
    ]
    calls = [_tool_call(b, names) for b in blocks if b.get("type") == "tool_use"]
    text = "".join(texts)
    if not calls and not text:
        return []
    message: JSON = {"role": "assistant", "content": text or None}
    if calls:
        message["tool_calls"] = calls
    return [message]


def _tool_call(block: JSON, names: ToolNames) -> JSON:
    name = block.get("name")
    return {
        "id": str(block.get("id") or ""),
        "type": "function",
        "function": {
            "name": names.to_openai(name if isinstance(name, str) else ""),
            "arguments": dump_arguments(block.get("input")),
        },
    }
