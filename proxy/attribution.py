"""Who caused a request: Claude Code session, subagent, client and version, and the trace the
client's own span belongs to (W3C traceparent), which the request's OpenTelemetry span joins."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import orjson

# "claude-cli/2.1.332 (external, cli)"; the SDKs put their language before the version:
# "Anthropic/Python 2.14.0" is client "Anthropic/Python", version "2.14.0".
_USER_AGENT = re.compile(r"^([A-Za-z][\w.\-]*)/(?:([A-Za-z]+) (?=\d))?([\w.\-+]+)")
MAX_ID_LENGTH = 100
# W3C Trace Context, version 00: "00-<32 hex trace id>-<16 hex parent span id>-<2 hex flags>",
# lowercase only. Compiled once: this runs on every request that sends the header.
_TRACEPARENT = re.compile(r"00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}")
_ZERO_TRACE_ID = "0" * 32
_ZERO_SPAN_ID = "0" * 16


@dataclass(slots=True)  # not frozen: made per request, and frozen costs 3x to build
class Attribution:
    session_id: str = ""
    agent_id: str = ""
    parent_agent_id: str = ""
    client_name: str = ""
    client_version: str = ""
    # Only for the span: never a ledger column (the ledger writer drops keys it has no column for).
    traceparent: str = ""


def _clip(value: str) -> str:
    return value[:MAX_ID_LENGTH]


def session_from_metadata(metadata: Any) -> str:
    """Claude Code sends metadata.user_id as a JSON string holding session_id."""
    if not isinstance(metadata, dict):
        return ""
    user_id = metadata.get("user_id")
    if not isinstance(user_id, str) or not user_id.startswith("{"):
        return ""
    try:
        decoded = orjson.loads(user_id)
    except orjson.JSONDecodeError:
        return ""
    session = decoded.get("session_id") if isinstance(decoded, dict) else None
    return session if isinstance(session, str) else ""


def valid_traceparent(value: str) -> str:
    """`value` if it is a well-formed version-00 traceparent, otherwise "" (ignored, as the
    specification asks of a header that cannot be parsed)."""
    if (
        len(value) != 55
        or not _TRACEPARENT.fullmatch(value)
        or value[3:35] == _ZERO_TRACE_ID
        or value[36:52] == _ZERO_SPAN_ID
    ):
        return ""
    return value


def attribute(headers: dict[str, str], metadata: Any) -> Attribution:
    match = _USER_AGENT.match(headers.get("user-agent", ""))
    client = ""
    if match:
        client = match.group(1) + (f"/{match.group(2)}" if match.group(2) else "")
    return Attribution(
        session_id=_clip(
            headers.get("x-claude-code-session-id", "") or session_from_metadata(metadata)
        ),
        agent_id=_clip(headers.get("x-claude-code-agent-id", "")),
        parent_agent_id=_clip(headers.get("x-claude-code-parent-agent-id", "")),
        client_name=client[:60],
        client_version=match.group(3)[:40] if match else "",
        traceparent=valid_traceparent(headers.get("traceparent", "")),
    )
