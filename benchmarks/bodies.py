"""Request bodies and headers for the benchmark: a small call and a Claude Code-sized one.

The large body follows what Claude Code 2.1.332 sends for `claude -p` (shared/CLIENTS.md): keys in
its order (model, messages, system, tools, metadata, max_tokens, thinking, context_management,
output_config, stream), three system blocks with cache_control, a user message with a
<system-reminder>, a role "system" message with its own output_config, twelve tools with JSON
schemas, metadata.user_id as a JSON string holding the session id; about 50 kB in all.
"""

from __future__ import annotations

import json
import random
import uuid
from typing import Any

MODEL = "claude-opus-5-5"
LARGE_TARGET_BYTES = 50_000
SESSION_ID = str(uuid.UUID(int=0x5EED_0000_0000_4000_8000_0000_0000_0001))
# fmt: off
_WORDS = (
    "the", "a", "to", "of", "and", "in", "is", "you", "for", "that", "with", "on", "tool",
    "file", "use", "code", "when", "this", "be", "not", "are", "it", "or", "user", "task",
    "read", "edit", "bash", "command", "output", "always", "never", "should", "must", "before",
    "after", "run", "test", "change", "commit", "directory", "path", "search", "result",
    "agent", "context", "prompt", "important", "instead", "only", "may", "will", "each", "any",
    "example", "follow", "rules", "project", "repository", "function", "error", "message",
)
# fmt: on
TOOL_NAMES = (
    "Agent",
    "Bash",
    "Edit",
    "ListAgents",
    "Read",
    "ReportFindings",
    "ScheduleWakeup",
    "Skill",
    "ToolSearch",
    "Workflow",
    "DeferredToolPlaceholder",
    "Write",
)


def _prose(rng: random.Random, n_words: int) -> str:
    words = [rng.choice(_WORDS) for _ in range(n_words)]
    sentences = [" ".join(words[i : i + 14]).capitalize() + "." for i in range(0, n_words, 14)]
    return " ".join(sentences)


def _tool(rng: random.Random, name: str) -> dict[str, Any]:
    properties = {
        f"{rng.choice(_WORDS)}_{i}": {"type": "string", "description": _prose(rng, 24)}
        for i in range(4)
    }
    tool: dict[str, Any] = {
        "name": name,
        "description": _prose(rng, 150),
        "input_schema": {
            "type": "object",
            "properties": properties,
            "required": list(properties)[:2],
            "additionalProperties": False,
            "$schema": "http://json-schema.org/draft-07/schema#",
        },
    }
    if name == "DeferredToolPlaceholder":
        tool["defer_loading"] = True
    return tool


def _encode(body: dict[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()


def claude_code_body(
    *, stream: bool, target: int = LARGE_TARGET_BYTES, model: str = MODEL
) -> bytes:
    rng = random.Random(20261126)  # the same bytes on every run
    tools = [_tool(rng, name) for name in TOOL_NAMES]
    ephemeral = {"type": "ephemeral"}
    user_id = json.dumps(
        {"device_id": "ab" * 32, "account_uuid": "", "session_id": SESSION_ID},
        separators=(",", ":"),
    )

    def build(prompt: str) -> dict[str, Any]:
        return {
            "model": model,
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "text",
                            "text": "<system-reminder>\n"
                            + _prose(rng, 60)
                            + "\n</system-reminder>",
                        },
                        {"type": "text", "text": "say hello"},
                    ],
                },
                {
                    "role": "system",
                    "content": [
                        {
                            "type": "text",
                            "text": "Working directory: /home/dev/project\nPlatform: linux",
                            "cache_control": ephemeral,
                        }
                    ],
                    "output_config": {"effort": "medium"},
                },
            ],
            "system": [
                {
                    "type": "text",
                    "text": "x-anthropic-billing-header: cc_version=2.1.332.1c9; "
                    "cc_entrypoint=sdk-cli;",
                },
                {
                    "type": "text",
                    "text": "You are a Claude agent, built on Anthropic's Claude Agent SDK.",
                    "cache_control": ephemeral,
                },
                {"type": "text", "text": prompt, "cache_control": ephemeral},
            ],
            "tools": tools,
            "metadata": {"user_id": user_id},
            "max_tokens": 128_000,
            "thinking": {"type": "adaptive", "display": "omitted"},
            "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
            "output_config": {"effort": "medium"},
            "stream": stream,
        }

    without_prompt = len(_encode(build("")))
    prompt = _prose(rng, max(0, target - without_prompt) // 5 + 50)
    prompt = prompt[: max(0, target - without_prompt)]
    return _encode(build(prompt))


def small_body(*, stream: bool, model: str = MODEL) -> bytes:
    return _encode(
        {
            "model": model,
            "max_tokens": 1024,
            "messages": [{"role": "user", "content": "say hello"}],
            "stream": stream,
        }
    )


def claude_code_headers(api_key: str) -> list[tuple[str, str]]:
    """Claude Code's request headers in its order (Host and Content-Length are added later)."""
    return [
        ("Accept", "application/json"),
        ("Content-Type", "application/json"),
        ("User-Agent", "claude-cli/2.1.332 (external, sdk-cli)"),
        ("X-Claude-Code-Session-Id", SESSION_ID),
        ("X-Stainless-Arch", "x64"),
        ("X-Stainless-Lang", "js"),
        ("X-Stainless-OS", "Linux"),
        ("X-Stainless-Package-Version", "0.128.0"),
        ("X-Stainless-Retry-Count", "0"),
        ("X-Stainless-Runtime", "node"),
        ("X-Stainless-Runtime-Version", "v26.12.1"),
        ("X-Stainless-Timeout", "600"),
        (
            "anthropic-beta",
            "claude-code-20250219,interleaved-thinking-2025-05-14,context-management-2025-06-27,"
            "per-turn-control-2026-07-01,mid-conversation-tool-changes-2026-07-01,"
            "thinking-token-count-2026-05-13,advanced-tool-use-2025-11-20,effort-2025-11-24",
        ),
        ("anthropic-dangerous-direct-browser-access", "true"),
        ("anthropic-version", "2023-06-01"),
        ("x-api-key", api_key),
        ("x-app", "cli"),
        ("Connection", "keep-alive"),
        ("Accept-Encoding", "gzip, deflate, br, zstd"),
    ]
