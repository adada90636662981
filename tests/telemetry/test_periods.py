from __future__ import annotations

import datetime as dt
import threading
from typing import Any

import pytest
from django.db import connection

from governance.models import Budget
from governance.services import common
from telemetry import ledger, periods, rollups
from telemetry.models import BudgetPeriodRecord, UsageRecord
from tests import factories
from tests.telemetry.usage_events import at, event, is_postgres, write

pytestmark = pytest.mark.django_db

NOW = at("2026-11-18 12:00")  # a Wednesday


@pytest.fixture
def key():
    return factories.virtual_key(team=factories.team())


def records(budget: Budget) -> dict[str, tuple[int, int, bool]]:
    return {
        r.period_label: (r.spent_micros, r.limit_micros, r.closed)
        for r in BudgetPeriodRecord.objects.filter(budget_id=budget.pk)
    }


def test_the_current_period_is_recorded_from_the_ledger(key):
    budget = factories.budget(owner=key.team, amount_micros=50_000_000, period="month")
    write(
        event(at("2026-10-31 23:59"), key=key, cost=7),  # last month
        event(at("2026-11-01 00:00"), key=key, cost=1_000),
        event(at("2026-11-18 11:00"), key=key, cost=2_000),
    )
    result = periods.sync_budget_periods(now=NOW)
    assert (result.budgets, result.opened, result.closed) == (1, 1, 0)
    assert records(budget) == {"2026-11": (3_000, 50_000_000, False)}
    record = BudgetPeriodRecord.objects.get()
    assert (record.period_start, record.period_end) == (
        at("2026-11-01 00:00"),
        at("2026-12-01 00:00"),
    )


def test_running_twice_keeps_one_record_and_follows_new_spend(key):
    budget = factories.budget(owner=key, amount_micros=10_000_000, period="week")
    write(event(at("2026-11-16 09:00"), key=key, cost=500))
    periods.sync_budget_periods(now=NOW)
    periods.sync_budget_periods(now=NOW)
    assert records(budget) == {"2026-W47": (500, 10_000_000, False)}
    write(event(at("2026-11-18 11:59"), key=key, cost=250))
    assert periods.sync_budget_periods(now=NOW).opened == 0
    assert records(budget) == {"2026-W47": (750, 10_000_000, False)}


def test_a_closed_period_gets_its_final_spend_once_after_the_grace(key):
    budget = factories.budget(owner=key, amount_micros=1_000_000, period="day")
    write(event(at("2026-11-18 10:00"), key=key, cost=100))
    periods.sync_budget_periods(now=NOW)
    # Just after midnight: a new day opens, the old one stays open for late events.
    write(event(at("2026-11-18 23:59"), key=key, cost=20))
    just_after = at("2026-11-19 00:02")
    assert periods.sync_budget_periods(now=just_after).closed == 0
    assert records(budget) == {
        "2026-11-18": (120, 1_000_000, False),
        "2026-11-19": (0, 1_000_000, False),
    }
    # A request that started before midnight, replayed from a spool within the grace.
    write(event(at("2026-11-18 23:59"), key=key, cost=3))
    after_grace = just_after + periods.CLOSE_GRACE
    assert periods.sync_budget_periods(now=after_grace).closed == 1
    assert records(budget)["2026-11-18"] == (123, 1_000_000, True)
    # Final: later arrivals do not rewrite a closed period.
    write(event(at("2026-11-18 23:58"), key=key, cost=1_000))
    assert periods.sync_budget_periods(now=after_grace).closed == 0
    assert records(budget)["2026-11-18"] == (123, 1_000_000, True)


def test_an_amount_change_mid_period_moves_the_limit_and_keeps_the_spend(key):
    budget = factories.budget(owner=key, amount_micros=5_000_000, period="month")
    write(event(at("2026-11-03 10:00"), key=key, cost=4_000_000))
    periods.sync_budget_periods(now=NOW)
    budget.amount_micros = 8_000_000
    common.save_instance(budget, actor=factories.TEST_ACTOR)
    write(event(at("2026-11-18 11:00"), key=key, cost=1_500_000))
    periods.sync_budget_periods(now=NOW)
    assert records(budget) == {"2026-11": (5_500_000, 8_000_000, False)}


def test_a_period_change_closes_the_old_record_and_starts_from_the_new_window(key):
    budget = factories.budget(owner=key.team, amount_micros=100_000_000, period="month")
    write(
        event(at("2026-11-02 10:00"), key=key, cost=3_000),  # before this week
        event(at("2026-11-17 10:00"), key=key, cost=500),  # this week (from Monday the 16th)
    )
    periods.sync_budget_periods(now=NOW)
    budget.period = Budget.Period.WEEK
    budget.amount_micros = 20_000_000
    common.save_instance(budget, actor=factories.TEST_ACTOR)
    later = at("2026-11-18 12:05")
    write(event(at("2026-11-18 12:01"), key=key, cost=40))
    result = periods.sync_budget_periods(now=later)
    assert (result.opened, result.closed) == (1, 1)
    assert records(budget) == {
        "2026-11": (3_540, 100_000_000, True),  # what was spent in it until the change
        "2026-W47": (540, 20_000_000, False),  # the ledger spend in the new window
    }
    month = BudgetPeriodRecord.objects.get(period_label="2026-11")
    assert month.period_end == later
    # Closed means final, also for a month that is not over.
    write(event(at("2026-11-18 12:06"), key=key, cost=1))
    periods.sync_budget_periods(now=at("2026-11-18 12:10"))
    assert records(budget)["2026-11"] == (3_540, 100_000_000, True)
    assert records(budget)["2026-W47"] == (541, 20_000_000, False)


def test_periods_follow_the_organizations_time_zone():
    org = factories.organization(timezone="Asia/Tokyo")  # UTC+9
    key = factories.virtual_key(organization=org)
    budget = factories.budget(owner=org, amount_micros=1_000_000, period="day")
    write(
        event(at("2026-11-17 14:59"), key=key, cost=1),  # 23:59 on the 17th in Tokyo
        event(at("2026-11-17 15:00"), key=key, cost=10),  # midnight on the 18th in Tokyo
    )
    periods.sync_budget_periods(now=NOW)
    record = BudgetPeriodRecord.objects.get(budget_id=budget.pk)
    assert (record.period_label, record.spent_micros) == ("2026-11-18", 10)
    assert record.period_start == at("2026-11-17 15:00")


def test_model_tier_budgets_count_only_their_models(key):
    budget = factories.budget(
        owner=key.team, amount_micros=1_000_000, period="month", model_patterns=["claude-opus-*"]
    )
    write(
        event(at("2026-11-10 10:00"), key=key, cost=100, routed_model="claude-opus-4-1"),
        event(at("2026-11-10 10:00"), key=key, cost=7, routed_model="claude-sonnet-4-6"),
    )
    periods.sync_budget_periods(now=NOW)
    assert records(budget)["2026-11"][0] == 100


def test_a_deleted_budgets_open_record_is_closed(key):
    budget = factories.budget(owner=key, amount_micros=1_000_000, period="month")
    write(event(at("2026-11-10 10:00"), key=key, cost=100))
    periods.sync_budget_periods(now=NOW)
    budget_id = budget.pk
    common.delete_instance(budget, actor=factories.TEST_ACTOR)
    assert periods.sync_budget_periods(now=NOW).closed == 1
    record = BudgetPeriodRecord.objects.get(budget_id=budget_id)
    assert (record.spent_micros, record.closed, record.period_end) == (100, True, NOW)


def test_only_the_named_budgets_are_synced(key):
    first = factories.budget(owner=key, amount_micros=1, period="month")
    second = factories.budget(owner=key.team, amount_micros=1, period="month")
    assert periods.sync_budget_periods(now=NOW, budget_ids=[second.pk]).budgets == 1
    assert not records(first)
    assert records(second)


@pytest.mark.django_db(transaction=True)
def test_two_workers_at_once_write_one_record_per_period():
    if not is_postgres():
        pytest.skip("SQLite serializes writers; concurrency is exercised on PostgreSQL")
    org = factories.organization()
    key = factories.virtual_key(organization=org)
    budgets = [
        factories.budget(owner=org, amount_micros=1_000 + i, period="month") for i in range(20)
    ]
    write(*(event(at("2026-11-10 10:00"), key=key, cost=5) for _ in range(10)))
    errors: list[BaseException] = []
    barrier = threading.Barrier(3)

    def worker() -> None:
        try:
            barrier.wait()
            periods.sync_budget_periods(now=NOW)
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors
    assert BudgetPeriodRecord.objects.count() == 20
    for budget in budgets:
        assert records(budget) == {"2026-11": (50, budget.amount_micros, False)}


def test_spend_equals_the_ledger_sum_with_rows_below_and_above_the_watermark():
    """Records are read from rollups plus the ledger rows not rolled up yet, and the minutes at
    the ends of a period that do not fill an hour (Kolkata is UTC+5:30): every kind of budget
    gets exactly the ledger's figure, before and after the rollup runs."""
    org = factories.organization(timezone="Asia/Kolkata")
    team = factories.team(organization=org)
    project = factories.project(organization=org)
    key = factories.virtual_key(team=team, project=project)
    sub_key = factories.virtual_key(parent=key)
    other = factories.virtual_key(organization=org)
    budgets = [
        factories.budget(owner=org, amount_micros=1, period="month"),
        factories.budget(owner=team, amount_micros=1, period="week"),
        factories.budget(owner=project, amount_micros=1, period="month"),
        factories.budget(owner=key, amount_micros=1, period="day"),
        factories.budget(owner=key, amount_micros=1, period="lifetime"),
        factories.budget(
            owner=org, amount_micros=1, period="month", model_patterns=["claude-opus-*"]
        ),
        factories.budget(owner=team, amount_micros=1, period="month", provider_names=["bedrock"]),
    ]
    now = at("2026-11-18 12:00")  # 17:30 in Kolkata; the day began at 18:30 UTC yesterday

    def rows(first: dt.datetime, count: int, step: dt.timedelta) -> list[dict[str, Any]]:
        keys = (key, sub_key, other)
        models = ("claude-opus-4-1", "claude-sonnet-4-6")
        return [
            event(
                first + step * i,
                key=keys[i % 3],
                cost=1 + i * 7,
                routed_model=models[i % 2],
                served_model=models[i % 2] + "-20250805",  # served differs from routed
                provider=("anthropic", "bedrock")[i % 5 == 0],
            )
            for i in range(count)
        ]

    month_start = at("2026-10-31 18:30")  # November in Kolkata
    write(
        *rows(month_start - dt.timedelta(minutes=45), 40, dt.timedelta(minutes=3)),
        *rows(at("2026-11-17 18:00"), 60, dt.timedelta(minutes=1)),  # around the day start
        *rows(at("2026-11-05 09:00"), 30, dt.timedelta(hours=9)),
    )
    rollups.run_rollups(settle_seconds=0)
    write(
        *rows(at("2026-11-17 18:10"), 50, dt.timedelta(minutes=1)),  # hours rolled up already
        *rows(at("2026-11-18 10:00"), 20, dt.timedelta(minutes=5)),
        *rows(month_start - dt.timedelta(minutes=10), 20, dt.timedelta(minutes=1)),  # late
    )
    assert UsageRecord.objects.filter(id__gt=rollups.cursor_position()).count() == 90

    def expected(budget: Budget) -> int:
        window = periods.current_window(budget, now)
        return ledger.spend_micros(
            scope=budget.scope,
            owner_id=periods.owner_id(budget),
            start=window.start,
            end=window.end,
            model_patterns=tuple(budget.model_patterns),
            provider_names=tuple(budget.provider_names),
        )

    periods.sync_budget_periods(now=now)
    figures = {b.pk: expected(b) for b in budgets}
    assert len(set(figures.values())) == len(budgets)  # each budget counts something else
    assert {b.pk: spent(b) for b in budgets} == figures
    rollups.run_rollups(settle_seconds=0)
    periods.sync_budget_periods(now=now)
    assert {b.pk: spent(b) for b in budgets} == figures


def spent(budget: Budget) -> int:
    return BudgetPeriodRecord.objects.get(budget_id=budget.pk, closed=False).spent_micros
