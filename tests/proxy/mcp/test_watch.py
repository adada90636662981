"""Which clients are told that their tool list changed."""

from __future__ import annotations

from typing import Any

import pytest

from governance.policy import KeyPolicy
from proxy.mcp import watch
from proxy.mcp.watch import Watcher


def key_policy(key_id: int) -> KeyPolicy:
    return KeyPolicy(
        key_id=key_id,
        key_name=f"k{key_id}",
        prefix="sk-gw-x",
        organization_id=1,
        organization_name="acme",
        timezone="UTC",
        fail_open=False,
    )


class Session:
    def __init__(self) -> None:
        self.notices = 0

    async def send_tool_list_changed(self) -> None:
        self.notices += 1


class Keys:
    """Key policies by lookup hash, and the fingerprint each key's view has now."""

    def __init__(self) -> None:
        self.policies: dict[str, KeyPolicy | None] = {"a": key_policy(1), "b": key_policy(2)}
        self.fingerprints = {1: "v1", 2: "v1"}

    async def policy_of(self, lookup_hash: str) -> KeyPolicy | None:
        return self.policies.get(lookup_hash)

    async def fingerprint_of(self, policy: KeyPolicy) -> str:
        return self.fingerprints[policy.key_id]


def listed(watcher: Watcher, session_id: str, lookup_hash: str, session: Any) -> None:
    watcher.listed(session_id, lookup_hash, session, "v1")


async def test_only_the_sessions_of_the_key_whose_view_moved_are_told():
    keys = Keys()
    watcher = Watcher(keys.policy_of, keys.fingerprint_of)
    first, second, other = Session(), Session(), Session()
    listed(watcher, "s1", "a", first)
    listed(watcher, "s2", "a", second)
    listed(watcher, "s3", "b", other)
    await watcher.check()
    assert (first.notices, second.notices, other.notices) == (0, 0, 0)
    keys.fingerprints[1] = "v2"
    await watcher.check()
    await watcher.check()  # told once per change
    assert (first.notices, second.notices, other.notices) == (1, 1, 0)


async def test_a_revoked_keys_sessions_are_forgotten():
    keys = Keys()
    watcher = Watcher(keys.policy_of, keys.fingerprint_of)
    listed(watcher, "s1", "a", Session())
    keys.policies["a"] = None
    await watcher.check()
    assert len(watcher) == 0


def test_delete_by_another_key_does_not_forget_the_session():
    keys = Keys()
    watcher = Watcher(keys.policy_of, keys.fingerprint_of)
    listed(watcher, "s1", "a", Session())
    watcher.seen("s1", "b", ended=True)
    assert len(watcher) == 1
    watcher.seen("s1", "a", ended=True)
    assert len(watcher) == 0


def test_watched_sessions_are_bounded(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(watch, "MAX_WATCHED", 10)
    keys = Keys()
    watcher = Watcher(keys.policy_of, keys.fingerprint_of)
    for number in range(25):
        listed(watcher, f"s{number}", "a", Session())
    # The least recently seen go, a few at a time: the rest keep their notices.
    assert len(watcher) == 10
    assert ("session", "s24") in watcher._watched and ("session", "s0") not in watcher._watched
