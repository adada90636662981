from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from django.conf import settings as django_settings

from proxy.counters.redis import RedisCounterStore
from telemetry import periods, reconcile, spool
from tests import factories
from tests.telemetry.usage_events import at, event, write

pytestmark = pytest.mark.django_db

NOW = at("2026-11-18 12:00")
needs_redis = pytest.mark.skipif(
    not django_settings.REDIS_URL, reason="reconciliation against Redis needs REDIS_URL"
)


@pytest.fixture(autouse=True)
def _spool_dir(settings, tmp_path) -> None:
    """An empty spool dir of the test's own: a backlog there holds lowering corrections."""
    settings.GATEWAY_SPOOL_DIR = str(tmp_path / "spool")


@pytest.fixture
def budget():
    team = factories.team()
    key = factories.virtual_key(team=team)
    budget = factories.budget(owner=team, amount_micros=10_000_000, period="month")
    write(
        event(at("2026-11-02 10:00"), key=key, cost=1_000),
        event(at("2026-11-17 10:00"), key=key, cost=2_000),
        event(at("2026-10-30 10:00"), key=key, cost=99_999),  # last month
    )
    return budget


@pytest.fixture
def client(settings) -> Iterator[redis.Redis]:
    settings.GATEWAY_COUNTER_PREFIX = f"test-reconcile-{uuid.uuid4().hex[:8]}"
    client = redis.Redis.from_url(settings.REDIS_URL)
    yield client
    for key in client.scan_iter(f"{settings.GATEWAY_COUNTER_PREFIX}:*"):
        client.delete(key)
    client.close()


def counter(client: redis.Redis, budget, label: str = "2026-11") -> dict[Any, Any]:
    return client.hgetall(reconcile.counter_key(budget.pk, label))


def set_counter(client: redis.Redis, budget, settled: int, reserved: int = 0) -> None:
    client.hset(reconcile.counter_key(budget.pk, "2026-11"), mapping={"s": settled, "r": reserved})


def run(**kwargs: Any) -> reconcile.ReconcileReport:
    return reconcile.reconcile_budgets(now=NOW, pause_seconds=0, **kwargs)


def test_without_redis_the_report_holds_ledger_figures(settings, budget):
    settings.REDIS_URL = ""
    report = run()
    assert not report.shared_store
    assert [
        (c.budget_id, c.period_label, c.ledger_micros, c.counter_micros) for c in report.checks
    ] == [(budget.pk, "2026-11", 3_000, None)]
    assert report.drifts == []


@needs_redis
def test_a_counter_ahead_of_the_ledger_is_brought_down_and_reservations_kept(client, budget):
    set_counter(client, budget, settled=5_000, reserved=300)
    report = run()
    (drift,) = report.drifts
    assert (drift.budget_id, drift.ledger_micros, drift.counter_micros, drift.drift_micros) == (
        budget.pk,
        3_000,
        5_000,
        2_000,
    )
    assert drift.reserved_micros == 300
    assert drift.repaired
    assert counter(client, budget) == {b"s": b"3000", b"r": b"300"}
    assert run().drifts == []  # repaired: the next run finds nothing


@needs_redis
def test_a_counter_behind_the_ledger_is_brought_up(client, budget):
    # e.g. requests admitted while Redis was down (fail open) never reached the counter
    set_counter(client, budget, settled=1_000)
    (drift,) = run().drifts
    assert drift.drift_micros == -2_000
    assert counter(client, budget)[b"s"] == b"3000"


@needs_redis
def test_report_only_changes_nothing(client, budget):
    set_counter(client, budget, settled=4_000)
    (drift,) = run(repair=False).drifts
    assert (drift.drift_micros, drift.repaired) == (1_000, False)
    assert counter(client, budget)[b"s"] == b"4000"


@needs_redis
def test_a_matching_counter_is_no_drift_and_a_missing_one_is_left_missing(client, budget):
    other = factories.budget(owner=budget.organization, amount_micros=1, period="week")
    set_counter(client, budget, settled=3_000)
    report = run()
    assert report.drifts == []
    figures = {c.budget_id: (c.counter_micros, c.ledger_micros) for c in report.checks}
    assert figures == {budget.pk: (3_000, 3_000), other.pk: (None, 2_000)}
    assert counter(client, other, "2026-W47") == {}  # admission seeds it when needed


@needs_redis
def test_settles_during_reconciliation_are_kept(client, budget, monkeypatch):
    """Requests keep settling while the ledger is read; the correction must not erase them."""
    set_counter(client, budget, settled=5_000)  # 2,000 too high
    read_ledger = periods.budget_spend

    def ledger_while_a_request_settles(*args, **kwargs):
        spent = read_ledger(*args, **kwargs)
        # A request of 100 settles now; its ledger row is still in the gateway's buffer.
        client.hincrby(reconcile.counter_key(budget.pk, "2026-11"), "s", 100)
        return spent

    monkeypatch.setattr(periods, "budget_spend", ledger_while_a_request_settles)
    (drift,) = run().drifts
    assert drift.drift_micros == 2_000
    assert counter(client, budget)[b"s"] == b"3100"


@needs_redis
def test_traffic_during_the_check_is_not_mistaken_for_drift(client, budget, monkeypatch):
    set_counter(client, budget, settled=3_000)
    read_ledger = periods.budget_spend

    def ledger_includes_a_request_settled_after_the_first_read(*args, **kwargs):
        client.hincrby(reconcile.counter_key(budget.pk, "2026-11"), "s", 100)
        return read_ledger(*args, **kwargs) + 100

    monkeypatch.setattr(
        periods, "budget_spend", ledger_includes_a_request_settled_after_the_first_read
    )
    assert run().drifts == []
    assert counter(client, budget)[b"s"] == b"3100"


@needs_redis
def test_counters_written_by_the_proxy_are_found(client, budget, settings):
    """Same key layout as proxy/counters/redis.py: the runtime's prefix plus b:<id>:<label>."""

    async def seed() -> None:
        store = RedisCounterStore(
            settings.REDIS_URL, prefix=f"{settings.GATEWAY_COUNTER_PREFIX}:", version_key="v"
        )
        await store.seed_budget(f"b:{budget.pk}:2026-11", 2_500, 0)
        await store.close()

    asyncio.run(seed())
    (drift,) = run().drifts
    assert (drift.counter_micros, drift.drift_micros) == (2_500, -500)

    async def read() -> int | None:
        store = RedisCounterStore(
            settings.REDIS_URL, prefix=f"{settings.GATEWAY_COUNTER_PREFIX}:", version_key="v"
        )
        try:
            return await store.budget_spent(f"b:{budget.pk}:2026-11")
        finally:
            await store.close()

    assert asyncio.run(read()) == 3_000


@needs_redis
def test_a_second_worker_skips_while_one_reconciles(client, budget, settings):
    set_counter(client, budget, settled=5_000)
    client.set(f"{settings.GATEWAY_COUNTER_PREFIX}:lock:reconcile", "someone-else")
    report = run()
    assert report.skipped
    assert counter(client, budget)[b"s"] == b"5000"
    client.delete(f"{settings.GATEWAY_COUNTER_PREFIX}:lock:reconcile")
    assert run().drifts[0].repaired
    assert client.get(f"{settings.GATEWAY_COUNTER_PREFIX}:lock:reconcile") is None


# --- never lower a counter while usage events wait outside the ledger (issue 10, item 2) ------


def spool_events(spool_dir: Path, count: int) -> None:
    events = [{"request_id": f"gwreq_spooled_{n}", "created_at": NOW} for n in range(count)]
    spool.append(spool_dir / "usage-4242.jsonl", events)


def dead_letter_events(spool_dir: Path, count: int) -> None:
    lines = [
        spool.dead_letter_line(error="DataError", event={"request_id": f"gwreq_dead_{n}"})
        for n in range(count)
    ]
    spool.write_dead_letters(spool_dir, lines)


def test_without_redis_the_report_names_the_local_backlog(settings, budget):
    settings.REDIS_URL = ""
    spool_events(Path(settings.GATEWAY_SPOOL_DIR), 2)

    report = run()

    assert report.backlog == {"local": 2}
    assert report.lowering_held


@needs_redis
@pytest.mark.parametrize("waiting", [spool_events, dead_letter_events])
def test_a_local_backlog_holds_a_lowering_and_still_raises(
    client, budget, settings, waiting, caplog
):
    other = factories.budget(owner=budget.organization, amount_micros=1, period="week")
    set_counter(client, budget, settled=5_000)  # ahead of the ledger's 3,000
    client.hset(reconcile.counter_key(other.pk, "2026-W47"), mapping={"s": 500, "r": 0})
    waiting(Path(settings.GATEWAY_SPOOL_DIR), 3)

    with caplog.at_level("WARNING", logger="gateway.reconcile"):
        report = run()

    assert report.backlog == {"local": 3}
    assert "(local: 3): counters are only raised, not lowered" in caplog.text
    checks = {check.budget_id: check for check in report.checks}
    held, raised = checks[budget.pk], checks[other.pk]
    assert (held.drift_micros, held.held, held.repaired) == (2_000, True, False)
    assert counter(client, budget)[b"s"] == b"5000"
    assert (raised.drift_micros, raised.repaired) == (-1_500, True)
    assert counter(client, other, "2026-W47")[b"s"] == b"2000"


@needs_redis
def test_a_backlog_advertised_by_a_gateway_elsewhere_holds_a_lowering(client, budget, settings):
    beacon = spool.RedisBacklogBeacon(
        settings.REDIS_URL, prefix=settings.GATEWAY_COUNTER_PREFIX, ttl_seconds=60
    )
    set_counter(client, budget, settled=5_000)
    beacon.publish(spool.Backlog(spooled=4, dead=1))
    assert 0 < client.ttl(beacon.key) <= 60

    report = run()

    assert sum(report.backlog.values()) == 5
    assert report.checks[0].held
    assert counter(client, budget)[b"s"] == b"5000"

    beacon.publish(spool.Backlog())  # the gateway replayed its spool
    beacon.close()
    assert client.exists(beacon.key) == 0
    (drift,) = run().drifts
    assert drift.repaired
    assert counter(client, budget)[b"s"] == b"3000"
