"""A request's body and headers as the gateway relies on them, checked at the edge."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from proxy.errors import GatewayError
from proxy.forwarding import ClientShape
from proxy.providers.base import (
    DROPPED_REQUEST_HEADERS,
    DROPPED_REQUEST_PREFIXES,
)

MAX_MODEL_NAME_LENGTH = 200


def parse_messages_body(body: bytes, *, need_max_tokens: bool) -> dict[str, Any]:
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise GatewayError(
            400, "invalid_request_error", f"Request body is not valid JSON: {exc}"
        ) from exc
    if not isinstance(parsed, dict):
        raise GatewayError(400, "invalid_request_error", "Request body must be a JSON object.")
    return check_messages_request(parsed, need_max_tokens=need_max_tokens)


def check_messages_request(parsed: dict[str, Any], *, need_max_tokens: bool) -> dict[str, Any]:
    """The fields the gateway relies on, checked at the edge: a model name that could not be
    stored in the ledger (too long, control characters) is refused here, not downstream."""
    model = parsed.get("model")
    if not isinstance(model, str) or not model:
        raise GatewayError(400, "invalid_request_error", "model: Field required (a model name).")
    if len(model) > MAX_MODEL_NAME_LENGTH or not model.isprintable():
        raise GatewayError(
            400,
            "invalid_request_error",
            f"model: must be a name of at most {MAX_MODEL_NAME_LENGTH} printable characters.",
        )
    if not isinstance(parsed.get("messages"), list):
        raise GatewayError(400, "invalid_request_error", "messages: Field required (a list).")
    max_tokens = parsed.get("max_tokens")
    if need_max_tokens and (
        not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1
    ):
        raise GatewayError(
            400, "invalid_request_error", "max_tokens: Field required (an integer >= 1)."
        )
    return parsed


# Whether a header name is forwarded, by name (bounded like proxy/asgi.py's name cache).
_forwardable: dict[str, bool] = {}


def _is_forwardable(name: str) -> bool:
    keep = name not in DROPPED_REQUEST_HEADERS and not name.startswith(DROPPED_REQUEST_PREFIXES)
    if len(_forwardable) < 1024:
        _forwardable[name] = keep
    return keep


def forwardable_headers(headers: dict[str, str]) -> dict[str, str]:
    known = _forwardable
    forwarded = {}
    for name, value in headers.items():
        keep = known.get(name)
        if keep is None:
            keep = _is_forwardable(name)
        if keep:
            forwarded[name] = value
    return forwarded


def model_refusal(refusal: str) -> GatewayError:
    return GatewayError(403, "permission_error", refusal[0].upper() + refusal[1:] + ".")


@dataclass(slots=True)  # not frozen: made per request, and frozen costs 3x to build
class Prepared:
    """A route's request as the Anthropic Messages request the gateway governs and forwards."""

    parsed: dict[str, Any]
    body: bytes  # what is forwarded: the client's own bytes when it spoke Anthropic
    shape: ClientShape | None = None  # how the answer is converted for the client


Prepare = Callable[[bytes], Prepared]


def prepare_anthropic(body: bytes) -> Prepared:
    return Prepared(parse_messages_body(body, need_max_tokens=True), body)
