"""OpenAI Chat Completions request -> Anthropic Messages request (the inbound OpenAI API).

Fields, in order of the OpenAI reference:
- `messages` -> `system` + `messages` (messages_to_anthropic): system and developer messages
  are hoisted (a system message in mid-conversation loses its position), tool results grouped
  into one user message first, text and image (data: and https URLs) and base64 PDF parts kept,
  tool-call arguments parsed (malformed ones kept, see content.parse_arguments).
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

from proxy.translate.content import JSON
from proxy.translate.errors import TranslationError
from proxy.translate.messages_to_anthropic import convert_messages

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
    system, messages = convert_messages(body.get("messages"))
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
