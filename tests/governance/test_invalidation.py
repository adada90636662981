"""Governance writes reach the gateways' snapshots: after commit, never before, and even when
the version bump fails at commit (the outbox retries it; every snapshot has a maximum age)."""

from __future__ import annotations

import datetime as dt
import logging

import pytest
from django.db import transaction
from django.utils import timezone
from pytest_django import DjangoCaptureOnCommitCallbacks

from governance import outbox, policy
from governance.models import PolicyChange
from governance.services import common, keys
from telemetry import scheduler
from tests import factories
from tests.governance.snapshot_support import FakeClock, gateway, unreadable_version

ACTOR = factories.TEST_ACTOR


def pending_changes() -> int:
    return PolicyChange.objects.filter(published_at__isnull=True).count()


def settle_setup() -> None:
    """Publish what the setup wrote: inside a test case's transaction, which never commits,
    the factories' writes stay pending."""
    PolicyChange.objects.filter(published_at__isnull=True).update(published_at=timezone.now())


def fail_to_bump() -> int:
    raise ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")


# --- the outbox: one change per transaction, published after commit ---------------------------


@pytest.mark.django_db
def test_policy_version_moves_only_after_commit(
    django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks,
) -> None:
    team = factories.team()
    settle_setup()
    before = policy.current_version()

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        team.description = "changed"
        common.save_instance(team, actor=ACTOR)
        assert policy.current_version() == before
        assert pending_changes() == 1  # written with the change, in its transaction

    assert len(callbacks) == 1
    assert policy.current_version() == before + 1
    assert pending_changes() == 0


@pytest.mark.django_db
@pytest.mark.parametrize(
    "write",
    ["create_key", "rotate_key", "revoke_key", "save_instance", "delete_instance"],
)
def test_every_write_records_and_publishes_a_change_on_commit(
    django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks, write: str
) -> None:
    org = factories.organization()
    key = factories.virtual_key(organization=org)
    team = factories.team(organization=org)
    before = policy.current_version()
    changes = PolicyChange.objects.count()

    with django_capture_on_commit_callbacks(execute=True):
        if write == "create_key":
            keys.create_key(actor=ACTOR, organization=org, name="new")
        elif write == "rotate_key":
            keys.rotate_key(actor=ACTOR, key=key)
        elif write == "revoke_key":
            keys.revoke_key(actor=ACTOR, key=key)
        elif write == "save_instance":
            factories.budget(owner=team, amount_micros=1)
        else:
            common.delete_instance(team, actor=ACTOR)
        assert policy.current_version() == before

    assert policy.current_version() > before
    assert PolicyChange.objects.count() == changes + 1
    assert pending_changes() == 0


@pytest.mark.django_db
def test_writes_in_one_transaction_share_one_change(
    django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks,
) -> None:
    org = factories.organization()
    changes = PolicyChange.objects.count()
    before = policy.current_version()

    with django_capture_on_commit_callbacks(execute=True) as callbacks, transaction.atomic():
        team = factories.team(organization=org)
        issued = factories.issued_key(team=team)
        keys.revoke_key(actor=ACTOR, key=issued.key)

    assert len(callbacks) == 1
    assert PolicyChange.objects.count() == changes + 1
    assert policy.current_version() == before + 1


@pytest.mark.django_db
def test_a_change_rolled_back_with_its_savepoint_is_recorded_again_by_the_next_write(
    django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks,
) -> None:
    org = factories.organization()
    changes = PolicyChange.objects.count()
    before = policy.current_version()

    with django_capture_on_commit_callbacks(execute=True), transaction.atomic():
        with pytest.raises(RuntimeError), transaction.atomic():
            factories.team(organization=org)
            raise RuntimeError("abort the savepoint")
        factories.team(organization=org)

    assert PolicyChange.objects.count() == changes + 1
    assert pending_changes() == 0
    assert policy.current_version() == before + 1


@pytest.mark.django_db
def test_rolled_back_write_records_nothing(
    django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks,
) -> None:
    issued = factories.issued_key()
    lookup_hash = keys.hash_secret(issued.secret)
    before = policy.current_version()
    changes = PolicyChange.objects.count()

    with (
        django_capture_on_commit_callbacks(execute=True) as callbacks,
        pytest.raises(RuntimeError),
        transaction.atomic(),
    ):
        keys.revoke_key(actor=ACTOR, key=issued.key)
        raise RuntimeError("abort")

    assert callbacks == []
    assert PolicyChange.objects.count() == changes
    assert policy.current_version() == before
    assert policy.load_policy(lookup_hash) is not None


@pytest.mark.django_db
def test_unchanged_save_records_nothing(
    django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks,
) -> None:
    team = factories.team()
    changes = PolicyChange.objects.count()

    with django_capture_on_commit_callbacks() as callbacks:
        common.save_instance(team, actor=ACTOR)

    assert callbacks == []
    assert PolicyChange.objects.count() == changes


@pytest.mark.django_db
def test_failed_bump_keeps_the_change_pending_and_the_outbox_job_publishes_it(
    django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    issued = factories.issued_key()
    settle_setup()
    before = policy.current_version()
    monkeypatch.setattr(policy, "invalidate_all", fail_to_bump)

    with (
        caplog.at_level(logging.WARNING, logger="gateway.policy"),
        django_capture_on_commit_callbacks(execute=True),
    ):
        keys.revoke_key(actor=ACTOR, key=issued.key)  # no error for the caller: it committed

    assert "not yet published" in caplog.text
    assert list(PolicyChange.objects.filter(published_at__isnull=True).values("attempts")) == [
        {"attempts": 1}
    ]
    assert scheduler.run_job(scheduler.JOBS_BY_NAME["policy_outbox"]).result["pending"] == 1
    assert policy.current_version() == before

    monkeypatch.undo()  # the shared version is writable again
    outcome = scheduler.run_job(scheduler.JOBS_BY_NAME["policy_outbox"])

    assert outcome.ok
    assert outcome.result == {"published": 1, "pending": 0, "pruned": 0}
    assert policy.current_version() == before + 1
    assert PolicyChange.objects.latest("pk").attempts == 3


@pytest.mark.django_db
def test_outbox_job_leaves_the_version_alone_when_nothing_is_pending() -> None:
    factories.team()
    settle_setup()
    before = policy.current_version()

    assert outbox.run_policy_outbox() == outbox.OutboxRun(published=0, pending=0, pruned=0)
    assert policy.current_version() == before


@pytest.mark.django_db
def test_published_changes_are_pruned_after_a_day() -> None:
    now = timezone.now()
    old = PolicyChange.objects.create(published_at=now - dt.timedelta(days=1, seconds=1))
    recent = PolicyChange.objects.create(published_at=now - dt.timedelta(hours=23))
    pending = PolicyChange.objects.create()

    assert outbox.prune_published(now) == 1
    assert set(PolicyChange.objects.values_list("pk", flat=True)) == {recent.pk, pending.pk}
    assert not PolicyChange.objects.filter(pk=old.pk).exists()


def test_a_lost_version_restarts_above_any_number_a_gateway_has_seen() -> None:
    """A Redis restarted empty (or a deleted file) must not count up to a number a gateway
    already holds: it would miss the change."""
    from pathlib import Path

    from django.conf import settings
    from django.core.cache import cache

    cache.delete(policy.VERSION_CACHE_KEY)  # where the version lives with Redis
    Path(settings.GATEWAY_POLICY_VERSION_FILE).unlink(missing_ok=True)  # and without
    assert policy.current_version() == 0

    first = policy.invalidate_all()

    assert first > 1_700_000_000_000  # milliseconds since 1970
    assert policy.invalidate_all() == first + 1
    assert policy.current_version() == first + 1


# --- the snapshots the proxy uses, loading from the database -----------------------------------


@pytest.mark.django_db(transaction=True)
def test_revoked_key_is_dropped_once_the_version_moves() -> None:
    issued = factories.issued_key()
    lookup_hash = keys.hash_secret(issued.secret)
    clock = FakeClock()
    with gateway(check_seconds=1.0, clock=clock) as gw:
        assert gw.key(lookup_hash) is not None

        keys.revoke_key(actor=ACTOR, key=issued.key)
        assert gw.key(lookup_hash) is not None  # inside its version check interval

        clock.now += 1.0
        assert gw.key(lookup_hash) is None


@pytest.mark.django_db(transaction=True)
def test_rotation_stops_the_old_secret_and_starts_the_new_one() -> None:
    issued = factories.issued_key()
    old_hash = keys.hash_secret(issued.secret)
    clock = FakeClock()
    with gateway(check_seconds=1.0, clock=clock) as gw:
        assert gw.key(old_hash) is not None

        rotated = keys.rotate_key(actor=ACTOR, key=issued.key)
        new_hash = keys.hash_secret(rotated.secret)
        clock.now += 1.0

        assert gw.key(old_hash) is None
        new = gw.key(new_hash)
        assert new is not None
        assert new.key_id == issued.key.pk


@pytest.mark.django_db(transaction=True)
def test_unchanged_version_keeps_snapshots_cached() -> None:
    issued = factories.issued_key()
    lookup_hash = keys.hash_secret(issued.secret)
    clock = FakeClock()
    with gateway(check_seconds=1.0, clock=clock) as gw:
        for _ in range(5):
            assert gw.key(lookup_hash) is not None
            gw.run(gw.snapshots.routing())
            gw.run(gw.snapshots.price_book())
            clock.now += 10

    assert gw.snapshots.loads == 3


@pytest.mark.django_db(transaction=True)
def test_revoked_key_stops_after_the_max_age_when_the_version_cannot_be_read() -> None:
    issued = factories.issued_key()
    lookup_hash = keys.hash_secret(issued.secret)
    clock = FakeClock()
    with gateway(max_age_seconds=60.0, clock=clock, version_reader=unreadable_version) as gw:
        assert gw.key(lookup_hash) is not None

        keys.revoke_key(actor=ACTOR, key=issued.key)
        clock.now += 59.9
        assert gw.key(lookup_hash) is not None  # the version says nothing: served until...

        clock.now += 0.1
        assert gw.key(lookup_hash) is None  # ...the snapshot is a minute old


@pytest.mark.django_db(transaction=True)
def test_a_cached_miss_expires_too() -> None:
    org = factories.organization()
    secret = keys.generate_secret()
    lookup_hash = keys.hash_secret(secret)
    clock = FakeClock()
    with gateway(max_age_seconds=60.0, clock=clock, version_reader=unreadable_version) as gw:
        assert gw.key(lookup_hash) is None

        keys.create_key(actor=ACTOR, organization=org, name="late", secret=secret)
        clock.now += 59.9
        assert gw.key(lookup_hash) is None

        clock.now += 0.1
        assert gw.key(lookup_hash) is not None


@pytest.mark.django_db(transaction=True)
def test_a_change_whose_bump_failed_reaches_the_snapshots_once_the_job_publishes_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    issued = factories.issued_key()
    lookup_hash = keys.hash_secret(issued.secret)
    clock = FakeClock()
    with gateway(check_seconds=1.0, clock=clock) as gw:
        assert gw.key(lookup_hash) is not None
        with monkeypatch.context() as patched:
            patched.setattr(policy, "invalidate_all", fail_to_bump)
            keys.revoke_key(actor=ACTOR, key=issued.key)

        clock.now += 1.0
        assert gw.key(lookup_hash) is not None  # nothing announced the revocation yet
        assert pending_changes() == 1

        assert outbox.run_policy_outbox().published == 1
        clock.now += 1.0
        assert gw.key(lookup_hash) is None
