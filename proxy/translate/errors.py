"""Errors: what cannot be translated, and error bodies converted between the two APIs.

Statuses: Anthropic's 529 (overloaded) becomes 503 for OpenAI clients, which do not retry a
status they do not know; an OpenAI-compatible upstream's 503 becomes 529 for Anthropic clients,
and every other status is kept. Error types follow the tables below.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from proxy.errors import anthropic_type_for

# Anthropic error type -> (OpenAI error type, OpenAI error code). OpenAI's SDK picks its
# exception class from the HTTP status; the type and code are for people and logs.
OPENAI_TYPE_BY_ANTHROPIC_TYPE: dict[str, tuple[str, str | None]] = {
    "invalid_request_error": ("invalid_request_error", None),
    "authentication_error": ("invalid_request_error", "invalid_api_key"),
    "permission_error": ("invalid_request_error", "permission_denied"),
    "not_found_error": ("invalid_request_error", "not_found"),
    "request_too_large": ("invalid_request_error", "request_too_large"),
    "billing_error": ("insufficient_quota", "insufficient_quota"),
    "rate_limit_error": ("rate_limit_exceeded", "rate_limit_exceeded"),
    "timeout_error": ("server_error", "timeout"),
    "api_error": ("server_error", None),
    "overloaded_error": ("server_error", "overloaded"),
}

# OpenAI error types or codes that say more than the status does.
_ANTHROPIC_TYPE_BY_OPENAI_CODE = {
    "insufficient_quota": "billing_error",
    "invalid_api_key": "authentication_error",
    "model_not_found": "not_found_error",
    "context_length_exceeded": "invalid_request_error",
}

UPSTREAM_CUT_SHORT = "The upstream stream ended before the response was complete."

# Provider messages quote a masked form of a rejected key ("Incorrect API key provided:
# sk-proj-****abcd"): even masked, the gateway's own credential never goes to a client.
_KEY_LIKE = re.compile(r"\b(?:sk|pk|rk|key|gsk|csk)[-_][A-Za-z0-9*._-]{4,}")
_MAX_MESSAGE_CHARS = 2000


class TranslationError(Exception):
    """A body the other API cannot express: 400 for a client's request, 502 for a reply."""

    def __init__(self, message: str, *, status: int = 400, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.param = param

    @property
    def anthropic_type(self) -> str:
        return "invalid_request_error" if self.status < 500 else "api_error"

    def anthropic_body(self, request_id: str = "") -> bytes:
        return anthropic_error_body(self.anthropic_type, self.message, request_id=request_id)

    def openai_body(self) -> bytes:
        error_type = "invalid_request_error" if self.status < 500 else "server_error"
        return openai_error_body(self.message, error_type=error_type, param=self.param)


def anthropic_error_body(error_type: str, message: str, *, request_id: str = "") -> bytes:
    body: dict[str, Any] = {"type": "error", "error": {"type": error_type, "message": message}}
    if request_id:
        body["request_id"] = request_id
    return orjson.dumps(body)


def openai_error_body(
    message: str, *, error_type: str, code: str | None = None, param: str | None = None
) -> bytes:
    return orjson.dumps({"error": openai_error_object(message, error_type, code, param)})


def openai_error_object(
    message: str, error_type: str, code: str | None = None, param: str | None = None
) -> dict[str, Any]:
    return {"message": message, "type": error_type, "param": param, "code": code}


# --- OpenAI-compatible upstream -> Anthropic client -----------------------------------------


def openai_error_to_anthropic(
    status: int, body: bytes, *, request_id: str = ""
) -> tuple[int, bytes, str]:
    """An OpenAI-shaped error reply as (status, Anthropic error body, Anthropic error type)."""
    if status < 400:
        status = 502  # not an error status at all: the upstream misbehaved
    anthropic_status = 529 if status == 503 else status
    error = _openai_error_fields(body)
    error_type = anthropic_error_type(error, anthropic_status)
    message = _client_message(error.get("message"), status)
    return (
        anthropic_status,
        anthropic_error_body(error_type, message, request_id=request_id),
        error_type,
    )


def openai_stream_error_to_anthropic(error: object) -> dict[str, Any]:
    """`data: {"error": {...}}` inside an OpenAI stream, as an Anthropic `error` event."""
    fields = error if isinstance(error, dict) else {"message": error}
    error_type = anthropic_error_type(fields, 500)
    message = _client_message(fields.get("message"), 500)
    return {"type": "error", "error": {"type": error_type, "message": message}}


def anthropic_error_type(error: dict[str, Any], status: int) -> str:
    for key in ("code", "type"):
        value = error.get(key)
        if isinstance(value, str) and value in _ANTHROPIC_TYPE_BY_OPENAI_CODE:
            return _ANTHROPIC_TYPE_BY_OPENAI_CODE[value]
    return anthropic_type_for(status)


def _openai_error_fields(body: bytes) -> dict[str, Any]:
    """The error object of the shapes compatible servers use: {"error": {...}} (OpenAI, vLLM),
    {"error": "text"} (Ollama), {"detail": "text"} (FastAPI servers), {"message": "text"}."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return {}
    if not isinstance(parsed, dict):
        return {}
    error = parsed.get("error")
    if isinstance(error, dict):
        return error
    for key in ("error", "detail", "message"):
        if isinstance(parsed.get(key), str):
            return {"message": parsed[key]}
    return {}


def _client_message(message: object, status: int) -> str:
    if status == 401:
        return "The upstream provider rejected the gateway's credentials."
    if not isinstance(message, str) or not message.strip():
        return f"The upstream provider answered HTTP {status}."
    return _KEY_LIKE.sub("[redacted]", message)[:_MAX_MESSAGE_CHARS]


# --- Anthropic upstream -> OpenAI client ----------------------------------------------------


def anthropic_error_to_openai(status: int, body: bytes) -> tuple[int, bytes]:
    """An Anthropic error reply as (status, OpenAI error body); 529 becomes 503."""
    openai_status = 503 if status == 529 else status
    error_type, message = _anthropic_error_fields(body)
    if not error_type:
        error_type = anthropic_type_for(status)
    if not message:
        message = f"The upstream provider answered HTTP {status}."
    return openai_status, orjson.dumps({"error": openai_error_for(error_type, message)})


def openai_error_for(anthropic_type: str, message: str) -> dict[str, Any]:
    """The OpenAI error object for an Anthropic error type (used for stream errors too)."""
    error_type, code = OPENAI_TYPE_BY_ANTHROPIC_TYPE.get(anthropic_type, ("server_error", None))
    return openai_error_object(message, error_type, code)


def _anthropic_error_fields(body: bytes) -> tuple[str, str]:
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return "", ""
    error = parsed.get("error") if isinstance(parsed, dict) else None
    if not isinstance(error, dict):
        return "", ""
    error_type = error.get("type")
    message = error.get("message")
    return (
        error_type if isinstance(error_type, str) else "",
        message if isinstance(message, str) else "",
    )
