"""OpenAI Chat Completions request -> Anthropic Messages request (the inbound OpenAI API).

Fields, in order of the OpenAI reference:
- `messages`: system and developer messages, wherever they are, are hoisted into `system` in
  order (a system message in mid-conversation loses its position); `tool` messages become
  `tool_result` blocks of one user message, placed before any user text of that turn;
  consecutive messages of one role are merged; empty and whitespace-only text is left out
  (Anthropic refuses it); a conversation that starts with the assistant gets a "Continue."
  user turn first; a final assistant message (prefill) loses its trailing whitespace.
- `max_completion_tokens`, else `max_tokens`, else `default_max_tokens` -> `max_tokens`.
- `temperature` clamped to Anthropic's 0..1; `top_p`, `stop` (-> `stop_sequences`) as sent.
- `tools` (function tools), `tool_choice` (`required` -> `any`), `parallel_tool_calls: false`
  (-> `disable_parallel_tool_use`). A history with tool calls but no `tools` gets stub
  definitions and tool choice `none`, because Anthropic refuses tool blocks without tools;
  a `tool_choice` without `tools` is dropped.
- `safety_identifier`, else `user` -> `metadata.user_id`.
- `stream` as sent (Anthropic streams always report usage; `stream_options` is read by the
  caller, see `wants_usage`).
- `response_format`: `json_schema` -> `output_config.format`; `text` is the default; 400 for
  `json_object` (Anthropic needs a schema).
- `reasoning_effort` -> extended thinking, budget by REASONING_BUDGETS; see `_thinking`.
- Anthropic extras an OpenAI SDK can pass through `extra_body`: `thinking` (wins over
  `reasoning_effort`), `top_k`.
- 400 (TranslationError): `n` > 1, `logprobs`, `top_logprobs`, `logit_bias`, `audio` and audio
  `modalities`, legacy `functions`/`function_call`, `web_search_options`, custom tools,
  `allowed_tools` tool choice, audio input parts, files other than base64 PDF.
- Dropped as harmless hints: `seed`, `presence_penalty`, `frequency_penalty`, `store`,
  `metadata`, `service_tier`, `prediction`, `verbosity`, `prompt_cache_*`, `moderation`, message
  `name`, and any field not listed here.
"""

from __future__ import annotations

from typing import TypeGuard

from proxy.translate.content import JSON, has_text, image_url_to_source, parse_arguments, text_block
from proxy.translate.errors import TranslationError

# reasoning_effort -> thinking budget_tokens. "none" (and no reasoning_effort) means no thinking.
REASONING_BUDGETS = {
    "minimal": 1024,
    "low": 2048,
    "medium": 8192,
    "high": 16384,
    "xhigh": 32768,
    "max": 65536,
}
MIN_THINKING_BUDGET = 1024
FIRST_TURN_PLACEHOLDER = "Continue."

_REJECTED_FIELDS = {
    "audio": "audio output is not supported",
    "functions": "legacy 'functions' are not supported; use 'tools'",
    "function_call": "legacy 'function_call' is not supported; use 'tool_choice'",
    "web_search_options": "web search options are not supported",
    "logit_bias": "logit_bias is not supported",
    "logprobs": "logprobs are not supported",
    "top_logprobs": "logprobs are not supported",
}


def openai_request_to_anthropic(body: JSON, *, default_max_tokens: int) -> JSON:
    _reject_unsupported(body)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise TranslationError("model is required.", param="model")
    system, messages = _messages(body.get("messages"))
    result: JSON = {"model": model, "messages": messages}
    if system:
        result["system"] = system
    max_tokens, explicit_limit = _max_tokens(body, default_max_tokens)
    result["max_tokens"] = max_tokens
    _sampling(body, result)
    _tools(body, result)
    _user(body, result)
    _response_format(body, result)
    _thinking(body, result, explicit_limit=explicit_limit)
    if body.get("stream") is True:
        result["stream"] = True
    return result


def wants_usage(body: JSON) -> bool:
    """Whether an OpenAI streaming client asked for the final usage chunk."""
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


# --- checks and plain fields ----------------------------------------------------------------


def _reject_unsupported(body: JSON) -> None:
    n = body.get("n")
    if n is not None and n != 1:
        raise TranslationError("n > 1 is not supported; send one request per choice.", param="n")
    for field, reason in _REJECTED_FIELDS.items():
        if body.get(field) not in (None, False, 0, {}, []):
            raise TranslationError(f"{field}: {reason}.", param=field)
    modalities = body.get("modalities")
    if isinstance(modalities, list) and any(m != "text" for m in modalities):
        raise TranslationError("Only text output is supported.", param="modalities")


def _max_tokens(body: JSON, default: int) -> tuple[int, bool]:
    for field in ("max_completion_tokens", "max_tokens"):
        value = body.get(field)
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise TranslationError(f"{field} must be a positive integer.", param=field)
        return value, True
    return default, False


def _sampling(body: JSON, result: JSON) -> None:
    temperature = body.get("temperature")
    if _is_number(temperature):
        result["temperature"] = min(max(temperature, 0), 1)
    for field in ("top_p", "top_k"):
        if _is_number(body.get(field)):
            result[field] = body[field]
    stop = body.get("stop")
    if isinstance(stop, str):
        stop = [stop]
    if isinstance(stop, list):
        sequences = [s for s in stop if isinstance(s, str) and s]
        if sequences:
            result["stop_sequences"] = sequences
    elif stop is not None:
        raise TranslationError("stop must be a string or a list of strings.", param="stop")


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _user(body: JSON, result: JSON) -> None:
    for field in ("safety_identifier", "user"):
        value = body.get(field)
        if isinstance(value, str) and value:
            result["metadata"] = {"user_id": value}
            return


def _response_format(body: JSON, result: JSON) -> None:
    response_format = body.get("response_format")
    if not isinstance(response_format, dict) or response_format.get("type") in (None, "text"):
        return
    if response_format.get("type") == "json_schema":
        spec = response_format.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if not isinstance(schema, dict):
            raise TranslationError(
                "response_format.json_schema.schema is required.", param="response_format"
            )
        result["output_config"] = {"format": {"type": "json_schema", "schema": schema}}
        return
    raise TranslationError(
        f"response_format {response_format.get('type')!r} is not supported; use json_schema.",
        param="response_format",
    )


# --- tools ----------------------------------------------------------------------------------


def _tools(body: JSON, result: JSON) -> None:
    raw = body.get("tools")
    if not isinstance(raw, list | None):
        raise TranslationError("tools must be a list.", param="tools")
    tools = [_tool(tool, f"tools[{i}]") for i, tool in enumerate(raw or [])]
    if not tools:
        _stub_tools_for_history(result)
        return
    result["tools"] = tools
    choice = _tool_choice(body.get("tool_choice"))
    if body.get("parallel_tool_calls") is False:
        choice = choice or {"type": "auto"}
        if choice["type"] != "none":
            choice["disable_parallel_tool_use"] = True
    if choice:
        result["tool_choice"] = choice


def _tool(tool: object, where: str) -> JSON:
    if not isinstance(tool, dict) or tool.get("type", "function") != "function":
        kind = tool.get("type") if isinstance(tool, dict) else tool
        raise TranslationError(f"{where}: tool type {kind!r} is not supported.", param=where)
    function = tool.get("function")
    if not isinstance(function, dict) or not isinstance(function.get("name"), str):
        raise TranslationError(f"{where}.function.name is required.", param=where)
    schema = function.get("parameters")
    schema = dict(schema) if isinstance(schema, dict) else {}
    schema.setdefault("type", "object")
    if schema["type"] == "object":
        schema.setdefault("properties", {})
    converted: JSON = {"name": function["name"], "input_schema": schema}
    if isinstance(function.get("description"), str):
        converted["description"] = function["description"]
    if function.get("strict") is True:
        converted["strict"] = True
    return converted


def _tool_choice(raw: object) -> JSON | None:
    if raw is None:
        return None
    simple = {"auto": "auto", "none": "none", "required": "any"}
    if isinstance(raw, str) and raw in simple:
        return {"type": simple[raw]}
    if isinstance(raw, dict) and raw.get("type") == "function":
        function = raw.get("function")
        if isinstance(function, dict) and isinstance(function.get("name"), str):
            return {"type": "tool", "name": function["name"]}
    raise TranslationError(f"tool_choice {raw!r} is not supported.", param="tool_choice")


def _stub_tools_for_history(result: JSON) -> None:
    names = sorted(
        {
            block["name"]
            for message in result["messages"]
            for block in message["content"]
            if block["type"] == "tool_use"
        }
    )
    if names:
        result["tools"] = [
            {
                "name": name,
                "description": "Not available in this request.",
                "input_schema": {"type": "object", "properties": {}},
            }
            for name in names
        ]
        result["tool_choice"] = {"type": "none"}


# --- reasoning ------------------------------------------------------------------------------


def _thinking(body: JSON, result: JSON, *, explicit_limit: bool) -> None:
    """reasoning_effort as a thinking budget (REASONING_BUDGETS).

    Without a client limit, max_tokens grows by the budget so the answer keeps its room; with
    one (OpenAI's limit covers reasoning too), the budget is at most half of it. No thinking
    when the budget would fall under Anthropic's minimum of 1024, when the request sets
    sampling or forces a tool (Anthropic refuses both with thinking), or in the middle of a
    tool loop, whose earlier thinking blocks an OpenAI client cannot send back.
    """
    if isinstance(body.get("thinking"), dict):
        result["thinking"] = body["thinking"]
        return
    effort = body.get("reasoning_effort")
    if effort is None or effort == "none":
        return
    if effort not in REASONING_BUDGETS:
        raise TranslationError(
            f"reasoning_effort {effort!r} is not supported.", param="reasoning_effort"
        )
    if _conflicts_with_thinking(result) or _in_tool_loop(result["messages"]):
        return
    budget = REASONING_BUDGETS[effort]
    if explicit_limit:
        budget = min(budget, result["max_tokens"] // 2)
        if budget < MIN_THINKING_BUDGET:
            return
    else:
        result["max_tokens"] += budget
    result["thinking"] = {"type": "enabled", "budget_tokens": budget}


def _conflicts_with_thinking(result: JSON) -> bool:
    choice = result.get("tool_choice") or {}
    return (
        result.get("temperature", 1) != 1
        or result.get("top_p", 1) < 0.95
        or "top_k" in result
        or choice.get("type") in ("any", "tool")
    )


def _in_tool_loop(messages: list[JSON]) -> bool:
    last = messages[-1]
    return bool(last["role"] == "user" and last["content"][0]["type"] == "tool_result")


# --- messages -------------------------------------------------------------------------------


def _messages(raw: object) -> tuple[list[JSON], list[JSON]]:
    if not isinstance(raw, list) or not raw:
        raise TranslationError("messages must be a non-empty list.", param="messages")
    system: list[JSON] = []
    turns: list[JSON] = []
    for i, message in enumerate(raw):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise TranslationError(f"{where} must be an object.", param=where)
        role = message.get("role")
        if role in ("system", "developer"):
            system.extend(text_block(t) for t in _texts(message.get("content"), where))
        elif role == "user":
            _append(turns, "user", _user_blocks(message.get("content"), where))
        elif role == "assistant":
            _append(turns, "assistant", _assistant_blocks(message, where))
        elif role == "tool":
            _append(turns, "user", [_tool_result(message, where)])
        else:
            raise TranslationError(f"{where}: role {role!r} is not supported.", param=where)
    if not turns:
        raise TranslationError("messages has no user or assistant message.", param="messages")
    return system, _normalized(turns)


def _append(turns: list[JSON], role: str, blocks: list[JSON]) -> None:
    if not blocks:
        return
    if turns and turns[-1]["role"] == role:
        turns[-1]["content"].extend(blocks)
    else:
        turns.append({"role": role, "content": blocks})


def _normalized(turns: list[JSON]) -> list[JSON]:
    for turn in turns:
        if turn["role"] == "user":
            # Anthropic wants a turn's tool results before anything else in the message.
            turn["content"].sort(key=lambda block: block["type"] != "tool_result")
    if turns[0]["role"] == "assistant":
        turns.insert(0, {"role": "user", "content": [text_block(FIRST_TURN_PLACEHOLDER)]})
    last = turns[-1]
    if last["role"] == "assistant" and last["content"][-1]["type"] == "text":
        # A prefill may not end in whitespace.
        last["content"][-1]["text"] = last["content"][-1]["text"].rstrip()
    return turns


def _texts(content: object, where: str) -> list[str]:
    """Text of a string or a list of text (and refusal) parts; other parts are refused."""
    if content is None:
        return []
    if isinstance(content, str):
        return [content] if has_text(content) else []
    if not isinstance(content, list):
        raise TranslationError(f"{where}.content must be a string or a list.", param=where)
    texts = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind not in ("text", "refusal"):
            raise TranslationError(
                f"{where}.content[{j}]: only text parts are allowed here.", param=where
            )
        text = part.get(kind)
        if has_text(text):
            texts.append(text)
    return texts


def _user_blocks(content: object, where: str) -> list[JSON]:
    if not isinstance(content, list):
        return [text_block(t) for t in _texts(content, where)]
    blocks = []
    for j, part in enumerate(content):
        block = _user_part(part, f"{where}.content[{j}]")
        if block is not None:
            blocks.append(block)
    return blocks


def _user_part(part: object, where: str) -> JSON | None:
    if not isinstance(part, dict):
        raise TranslationError(f"{where} must be an object.", param=where)
    kind = part.get("type")
    if kind == "text":
        text = part.get("text")
        return text_block(text) if isinstance(text, str) and has_text(text) else None
    if kind == "image_url":
        image = part.get("image_url")
        url = image.get("url") if isinstance(image, dict) else image
        return {"type": "image", "source": image_url_to_source(url, where=where)}
    if kind == "file":
        return _document(part.get("file"), where)
    raise TranslationError(f"{where}: content part {kind!r} is not supported.", param=where)


def _document(file: object, where: str) -> JSON:
    data = file.get("file_data") if isinstance(file, dict) else None
    prefix = "data:application/pdf;base64,"
    if not isinstance(data, str) or not data.startswith(prefix):
        raise TranslationError(
            f"{where}: only PDF files sent as base64 file_data are supported.", param=where
        )
    block: JSON = {
        "type": "document",
        "source": {"type": "base64", "media_type": "application/pdf", "data": data[len(prefix) :]},
    }
    if isinstance(file, dict) and isinstance(file.get("filename"), str):
        block["title"] = file["filename"]
    return block


def _assistant_blocks(message: JSON, where: str) -> list[JSON]:
    if message.get("function_call") is not None:
        raise TranslationError(
            f"{where}: legacy function_call is not supported; use tool_calls.", param=where
        )
    blocks = [text_block(t) for t in _texts(message.get("content"), where)]
    calls = message.get("tool_calls") or []
    if not isinstance(calls, list):
        raise TranslationError(f"{where}.tool_calls must be a list.", param=where)
    blocks.extend(_tool_use(call, f"{where}.tool_calls[{k}]") for k, call in enumerate(calls))
    return blocks


def _tool_use(call: object, where: str) -> JSON:
    if not isinstance(call, dict) or call.get("type", "function") != "function":
        raise TranslationError(f"{where}: only function tool calls are supported.", param=where)
    function = call.get("function")
    if (
        not isinstance(call.get("id"), str)
        or not isinstance(function, dict)
        or not isinstance(function.get("name"), str)
    ):
        raise TranslationError(f"{where} needs an id and a function name.", param=where)
    return {
        "type": "tool_use",
        "id": call["id"],
        "name": function["name"],
        "input": parse_arguments(function.get("arguments")),
    }


def _tool_result(message: JSON, where: str) -> JSON:
    tool_call_id = message.get("tool_call_id")
    if not isinstance(tool_call_id, str):
        raise TranslationError(f"{where}.tool_call_id is required.", param=where)
    block: JSON = {"type": "tool_result", "tool_use_id": tool_call_id}
    content = message.get("content")
    text = content if isinstance(content, str) else "\n\n".join(_texts(content, where))
    if text:
        block["content"] = text
    return block
