"""Pieces of content both directions share: images, documents, tool-call arguments, text."""

from __future__ import annotations

from typing import Any

import orjson

from proxy.translate.errors import TranslationError

JSON = dict[str, Any]

IMAGE_MEDIA_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})

# Tool-call arguments that are not a JSON object (a model's malformed output, or a call cut off
# by the token limit) are kept under this key instead of being lost, and unwrapped again when
# the call goes back to an OpenAI-shaped API.
RAW_ARGUMENTS_KEY = "_raw_arguments"


def parse_data_url(url: str) -> tuple[str, str] | None:
    """(media type, base64 data) of a `data:<type>;base64,<data>` URL, or None."""
    if not url.startswith("data:"):
        return None
    header, comma, data = url[5:].partition(",")
    if not comma or not header.endswith(";base64"):
        return None
    media_type = header.split(";", 1)[0].strip().lower()
    return ("image/jpeg" if media_type == "image/jpg" else media_type), data


def image_url_to_source(url: object, *, where: str) -> JSON:
    """An OpenAI `image_url.url` as an Anthropic image `source` (only jpeg/png/gif/webp)."""
    if not isinstance(url, str):
        raise TranslationError(f"{where}.image_url.url must be a string.", param=where)
    if url.startswith(("https://", "http://")):
        return {"type": "url", "url": url}
    parsed = parse_data_url(url)
    if parsed is None:
        raise TranslationError(
            f"{where}: images must be https URLs or base64 data URLs.", param=where
        )
    media_type, data = parsed
    if media_type not in IMAGE_MEDIA_TYPES:
        raise TranslationError(
            f"{where}: image type {media_type!r} is not supported (jpeg, png, gif, webp).",
            param=where,
        )
    return {"type": "base64", "media_type": media_type, "data": data}


def source_to_image_url(source: object, *, where: str) -> str:
    """An Anthropic image `source` as an OpenAI `image_url.url`."""
    if isinstance(source, dict):
        if source.get("type") == "base64":
            return f"data:{source.get('media_type')};base64,{source.get('data')}"
        if source.get("type") == "url" and isinstance(source.get("url"), str):
            return str(source["url"])
    raise TranslationError(
        f"{where}: only base64 and URL images can be sent to this provider.", param=where
    )


def parse_arguments(raw: object) -> JSON:
    """OpenAI `function.arguments` (a JSON string) as an Anthropic `tool_use.input` object."""
    if raw is None:
        return {}
    if isinstance(raw, dict):  # some compatible servers send the object itself
        return raw
    text = raw if isinstance(raw, str) else str(raw)
    if not text.strip():
        return {}
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return {RAW_ARGUMENTS_KEY: text}
    return value if isinstance(value, dict) else {RAW_ARGUMENTS_KEY: text}


def dump_arguments(tool_input: object) -> str:
    """An Anthropic `tool_use.input` as OpenAI `function.arguments`."""
    if (
        isinstance(tool_input, dict)
        and len(tool_input) == 1
        and isinstance(tool_input.get(RAW_ARGUMENTS_KEY), str)
    ):
        return str(tool_input[RAW_ARGUMENTS_KEY])
    return orjson.dumps(tool_input if tool_input is not None else {}).decode()


def has_text(text: object) -> bool:
    """Anthropic refuses empty and whitespace-only text blocks."""
    return isinstance(text, str) and bool(text.strip())


def text_block(text: str) -> JSON:
    return {"type": "text", "text": text}
