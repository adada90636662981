"""Error bodies and statuses between the APIs, and rate-limit headers."""

from __future__ import annotations

import datetime as dt

import orjson
import pytest

from proxy.translate import (
    anthropic_error_to_openai,
    anthropic_ratelimit_headers_to_openai,
    openai_error_to_anthropic,
    openai_ratelimit_headers_to_anthropic,
)
from proxy.translate.headers import format_duration, parse_duration


def openai_error(
    message: str, error_type: str, code: str | None = None, status: int = 400
) -> tuple[int, bytes]:
    body = {"error": {"message": message, "type": error_type, "param": None, "code": code}}
    return status, orjson.dumps(body)


def test_openai_503_becomes_anthropic_529_overloaded() -> None:
    status, body, error_type = openai_error_to_anthropic(
        *openai_error("busy", "server_error", status=503)
    )
    assert (status, error_type) == (529, "overloaded_error")
    assert orjson.loads(body) == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "busy"},
    }


@pytest.mark.parametrize(
    ("status", "error_type", "code", "expected"),
    [
        (400, "invalid_request_error", "context_length_exceeded", "invalid_request_error"),
        (404, "invalid_request_error", "model_not_found", "not_found_error"),
        (429, "requests", "rate_limit_exceeded", "rate_limit_error"),
        (429, "insufficient_quota", "insufficient_quota", "billing_error"),
        (500, "server_error", None, "api_error"),
        (403, "invalid_request_error", "unsupported_country_region_territory", "permission_error"),
    ],
)
def test_openai_errors_get_anthropic_types(
    status: int, error_type: str, code: str | None, expected: str
) -> None:
    new_status, body, anthropic_type = openai_error_to_anthropic(
        *openai_error("m", error_type, code, status)
    )
    assert new_status == status
    assert anthropic_type == expected
    assert orjson.loads(body)["error"]["type"] == expected


def test_an_upstream_401_never_shows_the_gateways_key() -> None:
    status, body, error_type = openai_error_to_anthropic(
        *openai_error(
            "Incorrect API key provided: sk-proj-****abcd.",
            "invalid_request_error",
            "invalid_api_key",
            401,
        )
    )
    assert (status, error_type) == (401, "authentication_error")
    assert b"sk-" not in body


def test_key_like_strings_are_redacted_from_other_messages() -> None:
    _, body, _ = openai_error_to_anthropic(
        *openai_error("bad key sk-abcdef123 used", "x", status=400)
    )
    assert orjson.loads(body)["error"]["message"] == "bad key [redacted] used"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"error": "model \'llama9\' not found"}', "model 'llama9' not found"),  # Ollama
        (b'{"detail": "Invalid model"}', "Invalid model"),  # FastAPI servers
        (b"<html>Bad Gateway</html>", "The upstream provider answered HTTP 502."),
    ],
)
def test_compatible_servers_error_shapes_are_understood(body: bytes, message: str) -> None:
    _, converted, _ = openai_error_to_anthropic(502, body, request_id="req_1")
    parsed = orjson.loads(converted)
    assert parsed["error"]["message"] == message
    assert parsed["request_id"] == "req_1"


def test_anthropic_529_becomes_openai_503() -> None:
    body = {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "Overloaded"},
        "request_id": "req_1",
    }
    status, converted = anthropic_error_to_openai(529, orjson.dumps(body))
    assert status == 503
    assert orjson.loads(converted) == {
        "error": {
            "message": "Overloaded",
            "type": "server_error",
            "param": None,
            "code": "overloaded",
        }
    }


@pytest.mark.parametrize(
    ("status", "anthropic_type", "openai_type", "code"),
    [
        (400, "invalid_request_error", "invalid_request_error", None),
        (401, "authentication_error", "invalid_request_error", "invalid_api_key"),
        (402, "billing_error", "insufficient_quota", "insufficient_quota"),
        (403, "permission_error", "invalid_request_error", "permission_denied"),
        (404, "not_found_error", "invalid_request_error", "not_found"),
        (429, "rate_limit_error", "rate_limit_exceeded", "rate_limit_exceeded"),
        (500, "api_error", "server_error", None),
    ],
)
def test_anthropic_errors_get_openai_types(
    status: int, anthropic_type: str, openai_type: str, code: str | None
) -> None:
    body = orjson.dumps({"type": "error", "error": {"type": anthropic_type, "message": "m"}})
    new_status, converted = anthropic_error_to_openai(status, body)
    assert new_status == status
    error = orjson.loads(converted)["error"]
    assert (error["type"], error["code"]) == (openai_type, code)


def test_a_non_json_anthropic_error_gets_a_type_from_its_status() -> None:
    status, converted = anthropic_error_to_openai(413, b"<html>Request Entity Too Large</html>")
    error = orjson.loads(converted)["error"]
    assert status == 413
    assert error["code"] == "request_too_large"


NOW = dt.datetime(2026, 11, 26, 12, 0, 0, tzinfo=dt.UTC)


def test_openai_reset_durations_become_anthropic_reset_times() -> None:
    headers = openai_ratelimit_headers_to_anthropic(
        {
            "x-ratelimit-limit-requests": "500",
            "x-ratelimit-remaining-requests": "499",
            "x-ratelimit-reset-requests": "120ms",
            "X-RateLimit-Reset-Tokens": "6m0s",
            "x-ratelimit-remaining-tokens": "not a number",
        },
        now=NOW,
    )
    assert headers == {
        "anthropic-ratelimit-requests-limit": "500",
        "anthropic-ratelimit-requests-remaining": "499",
        "anthropic-ratelimit-requests-reset": "2026-11-26T12:00:01Z",
        "anthropic-ratelimit-tokens-reset": "2026-11-26T12:06:00Z",
    }


def test_anthropic_reset_times_become_openai_durations() -> None:
    headers = anthropic_ratelimit_headers_to_openai(
        {
            "anthropic-ratelimit-tokens-limit": "80000",
            "anthropic-ratelimit-tokens-remaining": "79000",
            "anthropic-ratelimit-tokens-reset": "2026-11-26T12:01:30Z",
            "anthropic-ratelimit-requests-reset": "2026-11-26T11:59:00Z",  # already past
        },
        now=NOW,
    )
    assert headers == {
        "x-ratelimit-limit-tokens": "80000",
        "x-ratelimit-remaining-tokens": "79000",
        "x-ratelimit-reset-tokens": "1m30s",
        "x-ratelimit-reset-requests": "0ms",
    }


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("6ms", 0.006),
        ("1s", 1),
        ("6m0s", 360),
        ("1h2m3.5s", 3723.5),
        ("", None),
        ("soon", None),
        ("5 s", None),
    ],
)
def test_durations_are_parsed(text: str, seconds: float | None) -> None:
    assert parse_duration(text) == (pytest.approx(seconds) if seconds is not None else None)


@pytest.mark.parametrize(
    ("seconds", "text"), [(0.0061, "7ms"), (1, "1s"), (90.5, "1m30.5s"), (3723, "1h2m3s")]
)
def test_durations_are_formatted(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
