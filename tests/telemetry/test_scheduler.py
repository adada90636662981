from __future__ import annotations

import asyncio
import threading

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from telemetry import scheduler
from telemetry.models import SpendRollup
from tests import factories
from tests.telemetry.usage_events import at, event, write


class Counter:
    def __init__(self, fail: bool = False) -> None:
        self.calls = 0
        self.threads: set[int] = set()
        self.fail = fail

    def __call__(self) -> object:
        self.calls += 1
        self.threads.add(threading.get_ident())
        if self.fail:
            raise RuntimeError("boom")
        return {"calls": self.calls}


def test_run_job_logs_a_failure_and_returns(caplog):
    outcome = scheduler.run_job(scheduler.Job("broken", Counter(fail=True), 1, 0))
    assert not outcome.ok
    assert "background job broken failed" in caplog.text


def test_run_job_returns_plain_data():
    outcome = scheduler.run_job(scheduler.Job("fine", Counter(), 1, 0))
    assert (outcome.ok, outcome.result) == (True, {"calls": 1})


async def test_a_failing_job_does_not_stop_the_others():
    good, bad = Counter(), Counter(fail=True)
    runner = scheduler.Scheduler(
        [scheduler.Job("bad", bad, 0.02, 0), scheduler.Job("good", good, 0.02, 0.01)]
    )
    task = asyncio.create_task(runner.run())
    await asyncio.sleep(0.3)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert bad.calls >= 3
    assert good.calls >= 3
    assert {o.job for o in runner.outcomes if not o.ok} == {"bad"}
    # Jobs run off the event loop's thread.
    assert threading.get_ident() not in good.threads


async def test_jobs_run_at_their_own_intervals():
    fast, slow = Counter(), Counter()
    runner = scheduler.Scheduler(
        [scheduler.Job("fast", fast, 0.02, 0), scheduler.Job("slow", slow, 10, 0)]
    )
    task = asyncio.create_task(runner.run())
    await asyncio.sleep(0.25)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert slow.calls == 1
    assert fast.calls >= 4


@pytest.fixture
def fake_jobs(monkeypatch, settings):
    settings.CELERY_BROKER_URL = ""
    settings.GATEWAY_IN_PROCESS_JOBS = True
    job = Counter()
    monkeypatch.setattr(scheduler, "JOBS", (scheduler.Job("fake", job, 0.02, 0),))
    yield job
    assert scheduler._task is None or scheduler._task.done()


async def test_start_twice_runs_one_scheduler_and_stop_twice_is_safe(fake_jobs):
    scheduler.start()
    first = scheduler._task
    scheduler.start()
    assert scheduler._task is first
    await asyncio.sleep(0.1)
    assert fake_jobs.calls >= 2
    await scheduler.stop()
    await scheduler.stop()
    assert first is not None and first.done()
    calls = fake_jobs.calls
    await asyncio.sleep(0.1)
    assert fake_jobs.calls == calls


async def test_nothing_runs_in_process_when_a_broker_is_configured(fake_jobs, settings):
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:6379/0"
    scheduler.start()
    assert scheduler._task is None
    await scheduler.stop()
    assert fake_jobs.calls == 0


async def test_in_process_jobs_can_be_switched_off(fake_jobs, settings):
    settings.GATEWAY_IN_PROCESS_JOBS = False
    scheduler.start()
    assert scheduler._task is None


@pytest.mark.django_db(transaction=True)
async def test_a_real_job_runs_in_a_worker_thread_and_closes_its_connection(settings):
    settings.GATEWAY_ROLLUP_SETTLE_SECONDS = 0

    def setup() -> None:
        key = factories.virtual_key()
        write(event(at("2026-11-02 09:00"), key=key, cost=42))
        connection.close()

    await asyncio.to_thread(setup)
    rollups_job = scheduler.JOBS_BY_NAME["rollups"]
    runner = scheduler.Scheduler([scheduler.Job("rollups", rollups_job.run, 60, 0)])
    task = asyncio.create_task(runner.run())
    for _ in range(100):
        await asyncio.sleep(0.05)
        if runner.outcomes:
            break
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    (outcome,) = runner.outcomes
    assert outcome.ok, outcome
    assert outcome.result["rows"] == 1

    def total() -> int:
        try:
            return sum(
                SpendRollup.objects.filter(granularity="hour").values_list("cost_micros", flat=True)
            )
        finally:
            connection.close()

    assert await asyncio.to_thread(total) == 42


# --- the management command -----------------------------------------------------------------


@pytest.mark.django_db
def test_run_jobs_once_runs_the_named_jobs(capsys, settings):
    settings.GATEWAY_ROLLUP_SETTLE_SECONDS = 0
    settings.REDIS_URL = ""
    key = factories.virtual_key()
    write(event(at("2026-11-02 09:00"), key=key, cost=42))
    call_command("run_jobs", "--once", "rollups", "periods")
    out = capsys.readouterr().out
    assert out.startswith("rollups: ok")
    assert '"rows": 1' in out
    assert "periods: ok" in out
    assert SpendRollup.objects.filter(granularity="day").get().cost_micros == 42


@pytest.mark.django_db
def test_run_jobs_refuses_unknown_jobs():
    with pytest.raises(CommandError, match="unknown job nope"):
        call_command("run_jobs", "--once", "nope")


@pytest.mark.django_db
def test_run_jobs_reports_failures_after_running_the_rest(monkeypatch, capsys):
    good = Counter()
    jobs = {
        "bad": scheduler.Job("bad", Counter(fail=True), 1, 0),
        "good": scheduler.Job("good", good, 1, 0),
    }
    monkeypatch.setattr(scheduler, "JOBS_BY_NAME", jobs)
    with pytest.raises(CommandError, match="failed: bad"):
        call_command("run_jobs", "--once", "bad", "good")
    assert good.calls == 1
