"""Telling clients that their tool list changed: `notifications/tools/list_changed` on a
legacy session's stream, a ToolsListChanged event on a modern `subscriptions/listen` stream.

Every client that has listed tools (or listens) is remembered with the fingerprint of what it
saw. A check, run at the policy refresh interval and at once when an upstream's list changes,
recomputes each key's view and tells the clients whose fingerprint moved (a revoked grant, a
new one, a server that added a tool). Nothing of the key is kept but its lookup hash.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from mcp.server.session import ServerSession
from mcp.server.subscriptions import ServerEvent, ToolsListChanged

from governance.policy import KeyPolicy

logger = logging.getLogger("gateway.mcp")
SESSION_IDLE_SECONDS = 30 * 60.0  # as the SDK's session manager: a session idle this long is gone
MAX_WATCHED = 20_000


@dataclass(slots=True)
class _Watched:
    lookup_hash: str
    fingerprint: str
    notify: Callable[[], Awaitable[None]]
    seen_at: float


class _KeyBus:
    """The SDK's subscription bus seam for one listen stream: it receives only its key's
    events (the watcher delivers them; nothing is published through it)."""

    def __init__(self, watcher: Watcher, lookup_hash: str, fingerprint: str) -> None:
        self._watcher = watcher
        self._lookup_hash = lookup_hash
        self._fingerprint = fingerprint

    async def publish(self, event: ServerEvent) -> None:
        return None

    def subscribe(self, listener: Callable[[ServerEvent], None]) -> Callable[[], None]:
        token = object()

        async def notify() -> None:
            listener(ToolsListChanged())

        self._watcher.add(token, _Watched(self._lookup_hash, self._fingerprint, notify, 0.0))
        return lambda: self._watcher.remove(token)


class Watcher:
    def __init__(
        self,
        policy_of: Callable[[str], Awaitable[KeyPolicy | None]],
        fingerprint_of: Callable[[KeyPolicy], Awaitable[str]],
    ) -> None:
        self._policy_of = policy_of
        self._fingerprint_of = fingerprint_of
        self._watched: dict[object, _Watched] = {}
        self.changed = asyncio.Event()  # set to check at once (an upstream list changed)

    def __len__(self) -> int:
        return len(self._watched)

    def add(self, token: object, watched: _Watched) -> None:
        if len(self._watched) >= MAX_WATCHED and token not in self._watched:
            self._drop_oldest_sessions()
        self._watched[token] = watched

    def remove(self, token: object) -> None:
        self._watched.pop(token, None)

    def listed(self, session_id: str, lookup_hash: str, session: ServerSession, fp: str) -> None:
        """A legacy session listed its tools (a stateless request has no stream to tell)."""
        if session_id:
            self.add(
                ("session", session_id),
                _Watched(lookup_hash, fp, session.send_tool_list_changed, time.monotonic()),
            )

    def seen(self, session_id: str, lookup_hash: str, *, ended: bool = False) -> None:
        """A request of a legacy session arrived (a DELETE ends it); another key's request
        for it changes nothing (the SDK refuses it)."""
        token = ("session", session_id)
        watched = self._watched.get(token)
        if watched is None or watched.lookup_hash != lookup_hash:
            return
        if ended:
            self.remove(token)
        else:
            watched.seen_at = time.monotonic()

    def bus(self, lookup_hash: str, fingerprint: str) -> Any:
        return _KeyBus(self, lookup_hash, fingerprint)

    def _expire(self, now: float) -> None:
        """Forget sessions idle past the SDK's idle timeout (listen streams end on their own)."""
        for token in [
            token
            for token, watched in self._watched.items()
            if watched.seen_at and now - watched.seen_at >= SESSION_IDLE_SECONDS
        ]:
            self._watched.pop(token, None)

    def _drop_oldest_sessions(self) -> None:
        """Bounded memory: the tenth of the sessions seen least recently are forgotten (they
        miss change notices, nothing else)."""
        sessions = [token for token, watched in self._watched.items() if watched.seen_at]
        sessions.sort(key=lambda token: self._watched[token].seen_at)
        for token in sessions[: max(1, MAX_WATCHED // 10)]:
            self._watched.pop(token, None)

    async def run(self, interval: float, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), interval)
            self.changed.clear()
            try:
                await self.check()
            except Exception:
                logger.exception("checking MCP tool lists for changes failed")

    async def check(self) -> None:
        self._expire(time.monotonic())
        by_key: dict[str, list[object]] = {}
        for token, watched in self._watched.items():
            by_key.setdefault(watched.lookup_hash, []).append(token)
        for lookup_hash, tokens in by_key.items():
            try:
                policy = await self._policy_of(lookup_hash)
            except Exception as exc:  # policy database unreachable: check again next time
                logger.debug("MCP list check: key policy unavailable (%s)", type(exc).__name__)
                continue
            if policy is None:  # revoked: its sessions are refused from now on anyway
                for token in tokens:
                    self.remove(token)
                continue
            fingerprint = await self._fingerprint_of(policy)
            for token in tokens:
                current = self._watched.get(token)
                if current is not None and current.fingerprint != fingerprint:
                    current.fingerprint = fingerprint
                    try:
                        await current.notify()
                    except Exception:  # a stream that went away: notices are advisory
                        logger.debug("could not deliver a tools/list_changed notice")
