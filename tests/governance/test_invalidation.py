"""Policy snapshots are invalidated after a governance write commits, never before."""

from __future__ import annotations

import pytest
from django.db import transaction
from django.test import override_settings
from pytest_django import DjangoCaptureOnCommitCallbacks

from governance import policy
from governance.policy import KeyPolicy, PolicyCache
from governance.services import common, keys
from tests import factories

pytestmark = pytest.mark.django_db


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class CountingLoader:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def __call__(self, lookup_hash: str) -> KeyPolicy | None:
        self.calls.append(lookup_hash)
        return None


def test_policy_version_moves_only_after_commit(
    django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks,
) -> None:
    team = factories.team()
    before = policy.current_version()

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        team.description = "changed"
        common.save_instance(team, actor=factories.TEST_ACTOR)
        assert policy.current_version() == before

    assert len(callbacks) == 1
    assert policy.current_version() == before + 1


def test_cached_snapshot_is_dropped_after_revocation_commits(
    django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks,
) -> None:
    issued = factories.issued_key()
    lookup_hash = keys.hash_secret(issued.secret)
    assert policy.local_cache.get(lookup_hash) is not None

    with django_capture_on_commit_callbacks(execute=True):
        keys.revoke_key(actor=factories.TEST_ACTOR, key=issued.key)
        assert policy.local_cache.is_cached(lookup_hash)
        assert policy.local_cache.cached(lookup_hash) is not None

    assert not policy.local_cache.is_cached(lookup_hash)
    assert policy.local_cache.get(lookup_hash) is None


@pytest.mark.parametrize(
    "write",
    ["create_key", "rotate_key", "revoke_key", "save_instance", "delete_instance"],
)
def test_every_write_invalidates_on_commit(
    django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks, write: str
) -> None:
    org = factories.organization()
    key = factories.virtual_key(organization=org)
    team = factories.team(organization=org)
    actor = factories.TEST_ACTOR
    before = policy.current_version()

    with django_capture_on_commit_callbacks(execute=True):
        if write == "create_key":
            keys.create_key(actor=actor, organization=org, name="new")
        elif write == "rotate_key":
            keys.rotate_key(actor=actor, key=key)
        elif write == "revoke_key":
            keys.revoke_key(actor=actor, key=key)
        elif write == "save_instance":
            factories.budget(owner=team, amount_micros=1)
        else:
            common.delete_instance(team, actor=actor)
        assert policy.current_version() == before

    assert policy.current_version() > before


def test_rolled_back_write_does_not_invalidate(
    django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks,
) -> None:
    issued = factories.issued_key()
    lookup_hash = keys.hash_secret(issued.secret)
    policy.local_cache.get(lookup_hash)
    before = policy.current_version()

    with (
        django_capture_on_commit_callbacks(execute=True) as callbacks,
        pytest.raises(RuntimeError),
        transaction.atomic(),
    ):
        keys.revoke_key(actor=factories.TEST_ACTOR, key=issued.key)
        raise RuntimeError("abort")

    assert callbacks == []
    assert policy.current_version() == before
    assert policy.local_cache.is_cached(lookup_hash)
    assert policy.load_policy(lookup_hash) is not None


def test_unchanged_save_does_not_invalidate(
    django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks,
) -> None:
    team = factories.team()

    with django_capture_on_commit_callbacks() as callbacks:
        common.save_instance(team, actor=factories.TEST_ACTOR)

    assert callbacks == []


def test_invalidate_all_counts_up_from_an_empty_cache() -> None:
    from pathlib import Path

    from django.conf import settings
    from django.core.cache import cache

    cache.delete(policy.VERSION_CACHE_KEY)  # where the version lives with Redis
    Path(settings.GATEWAY_POLICY_VERSION_FILE).unlink(missing_ok=True)  # and without

    assert policy.current_version() == 0
    assert policy.invalidate_all() == 1
    assert policy.invalidate_all() == 2
    assert policy.current_version() == 2


# --- the per-process cache and the shared version ---------------------------------------------


@override_settings(GATEWAY_POLICY_CHECK_SECONDS=5.0)
def test_process_cache_reloads_only_after_the_check_interval() -> None:
    clock, loader, version = FakeClock(), CountingLoader(), [7]
    cache = PolicyCache(loader=loader, version_reader=lambda: version[0], clock=clock)

    cache.get("h")
    cache.get("h")
    assert loader.calls == ["h"]

    version[0] = 8  # another process committed a change
    clock.now += 4.9
    cache.get("h")
    assert loader.calls == ["h"]

    clock.now += 0.2
    cache.get("h")
    assert loader.calls == ["h", "h"]


@override_settings(GATEWAY_POLICY_CHECK_SECONDS=5.0)
def test_process_cache_keeps_entries_while_the_version_is_unchanged() -> None:
    clock, loader = FakeClock(), CountingLoader()
    cache = PolicyCache(loader=loader, version_reader=lambda: 3, clock=clock)

    for _ in range(5):
        cache.get("h")
        clock.now += 10

    assert loader.calls == ["h"]


@override_settings(GATEWAY_POLICY_CHECK_SECONDS=1.0)
def test_process_cache_reads_the_version_at_most_once_per_interval() -> None:
    clock, reads = FakeClock(), []

    def read_version() -> int:
        reads.append(clock.now)
        return 1

    cache = PolicyCache(loader=CountingLoader(), version_reader=read_version, clock=clock)
    for _ in range(10):
        cache.get("h")
        clock.now += 0.25

    assert len(reads) == 3  # at 1000.0, 1001.0 and 1002.0


def test_unknown_keys_are_cached_as_misses() -> None:
    loader = CountingLoader()
    cache = PolicyCache(loader=loader, version_reader=lambda: 1, clock=FakeClock())

    assert cache.get("nope") is None
    assert cache.get("nope") is None
    assert cache.is_cached("nope")
    assert loader.calls == ["nope"]


def test_clearing_the_process_cache_forces_a_reload() -> None:
    loader = CountingLoader()
    cache = PolicyCache(loader=loader, version_reader=lambda: 1, clock=FakeClock())
    cache.get("h")

    cache.clear()
    cache.get("h")

    assert loader.calls == ["h", "h"]


@override_settings(GATEWAY_POLICY_CHECK_SECONDS=1.0)
def test_shared_version_bump_reaches_a_second_process_cache() -> None:
    """Two caches standing for two processes share the version through Django's cache."""
    clock = FakeClock()
    issued = factories.issued_key()
    lookup_hash = keys.hash_secret(issued.secret)
    other_process = PolicyCache(clock=clock)
    assert other_process.get(lookup_hash) is not None

    with transaction.atomic():
        keys.revoke_key(actor=factories.TEST_ACTOR, key=issued.key)
    policy.invalidate_all()  # what the on-commit callback does after a real commit

    assert other_process.get(lookup_hash) is not None  # still inside its check interval
    clock.now += 1.0
    assert other_process.get(lookup_hash) is None
