"""OpenAI `messages` -> Anthropic `system` blocks and `messages` (see requests_to_anthropic).

System and developer messages are hoisted into `system` in order; `tool` messages become
`tool_result` blocks of one user message, before any user text of that turn; consecutive
messages of one role are merged; empty and whitespace-only text is left out (Anthropic refuses
it); a conversation that starts with the assistant gets a "Continue." user turn first; a final
assistant message (prefill) loses its trailing whitespace.
"""

from __future__ import annotations

from proxy.translate.content import JSON, has_text, image_url_to_source, parse_arguments, text_block
from proxy.translate.errors import TranslationError

FIRST_TURN_PLACEHOLDER = "Continue."


def convert_messages(raw: object) -> tuple[list[JSON], list[JSON]]:
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
