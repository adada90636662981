"""Errors the gateway itself raises, rendered in the client's API shape."""

from __future__ import annotations

import orjson

# Anthropic error types by HTTP status, for upstream errors that arrive without a usable body.
ANTHROPIC_TYPE_BY_STATUS = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    408: "timeout_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    502: "api_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}


class GatewayError(Exception):
    def __init__(
        self,
        status: int,
        error_type: str,
        message: str,
        headers: list[tuple[bytes, bytes]] | None = None,
        *,
        recorded: bool = True,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error_type = error_type
        self.message = message
        self.headers = headers or []
        # False for the few refusals that must stay cheap under a flood (throttled
        # authentication failures): they get no ledger row, only metrics.
        self.recorded = recorded

    def anthropic_body(self, request_id: str) -> bytes:
        return anthropic_error_body(self.error_type, self.message, request_id)

    def openai_status_and_body(self, request_id: str) -> tuple[int, bytes]:
        """The error as an OpenAI client expects it (a 529 becomes 503)."""
        from proxy.translate import anthropic_error_to_openai

        return anthropic_error_to_openai(self.status, self.anthropic_body(request_id))


def anthropic_error_body(error_type: str, message: str, request_id: str) -> bytes:
    return orjson.dumps(
        {
            "type": "error",
            "error": {"type": error_type, "message": message},
            "request_id": request_id,
        }
    )


def anthropic_type_for(status: int) -> str:
    if status in ANTHROPIC_TYPE_BY_STATUS:
        return ANTHROPIC_TYPE_BY_STATUS[status]
    return "api_error" if status >= 500 else "invalid_request_error"
