"""Tool names made valid for OpenAI, and restored on the way back.

OpenAI accepts `^[a-zA-Z0-9_-]{1,64}$`; Anthropic accepts up to 128 characters, and Claude Code's
MCP tools (`mcp__<server>__<tool>`) may be longer or carry characters from the server's name.
A name that is already valid is kept. Any other is made valid and given a suffix from a hash of
the original (`mcp__my.server__x` -> `mcp__my_server__x_3f2a9c1b`), so the same name always maps
the same way and two names never share one.
"""

from __future__ import annotations

import hashlib
import re

MAX_OPENAI_NAME = 64
_VALID = re.compile(r"[a-zA-Z0-9_-]{1,64}")
_INVALID_CHAR = re.compile(r"[^a-zA-Z0-9_-]")


class ToolNames:
    """The name map of one request; build it while translating the request, use it on the reply."""

    def __init__(self) -> None:
        self._to_openai: dict[str, str] = {}
        self._to_original: dict[str, str] = {}

    def to_openai(self, name: str) -> str:
        known = self._to_openai.get(name)
        if known is not None:
            return known
        safe = name
        if not _VALID.fullmatch(name) or name in self._to_original:
            safe = _derived(name, taken=self._to_original)
        self._to_openai[name] = safe
        self._to_original[safe] = name
        return safe

    def original(self, openai_name: str) -> str:
        """The name the client knows; a name the map never gave out is returned as it is."""
        return self._to_original.get(openai_name, openai_name)

    def renamed(self) -> dict[str, str]:
        """Original -> OpenAI name, for the names that had to change (for logs and tests)."""
        return {k: v for k, v in self._to_openai.items() if k != v}


def _derived(name: str, *, taken: dict[str, str]) -> str:
    digest = hashlib.sha256(name.encode()).hexdigest()
    stem = _INVALID_CHAR.sub("_", name)
    for length in range(8, len(digest) + 1, 4):
        suffix = "_" + digest[:length]
        candidate = stem[: MAX_OPENAI_NAME - len(suffix)] + suffix
        if candidate not in taken:
            return candidate
    # 2**-256: only reachable if SHA-256 collides.
    raise ValueError(f"no free OpenAI name for tool {name!r}")
