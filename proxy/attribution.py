"""Who caused a request: Claude Code session, subagent, client and version."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import orjson

# "claude-cli/2.1.332 (external, cli)"; the SDKs put their language before the version:
# "Anthropic/Python 2.14.0" is client "Anthropic/Python", version "2.14.0".
_USER_AGENT = re.compile(r"^([A-Za-z][\w.\-]*)/(?:([A-Za-z]+) (?=\d))?([\w.\-+]+)")
MAX_ID_LENGTH = 100


@dataclass(frozen=True, slots=True)
class Attribution:
    session_id: str = ""
    agent_id: str = ""
    parent_agent_id: str = ""
    client_name: str = ""
    client_version: str = ""


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
    )
