from __future__ import annotations

import datetime as dt
import threading
import zoneinfo
from collections import defaultdict
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from telemetry import rollups
from telemetry.models import RollupCursor, SessionRollup, SpendRollup, UsageRecord
from tests import factories
from tests.telemetry.usage_events import at, event, is_postgres, write

pytestmark = pytest.mark.django_db

DIMS = ("organization_id", "team_id", "project_id", "key_id", "model", "provider")
COUNTS = rollups.COUNTS


def roll(**kwargs: Any) -> rollups.RollupRun:
    return rollups.run_rollups(settle_seconds=0, **kwargs)


def expected_cells(granularity: str) -> dict[tuple[Any, ...], list[int]]:
    """What the rollups should hold, computed row by row in Python from the whole ledger."""
    cells: dict[tuple[Any, ...], list[int]] = defaultdict(lambda: [0] * len(COUNTS))
    for row in UsageRecord.objects.all():
        bucket = row.created_at.astimezone(dt.UTC).replace(minute=0, second=0, microsecond=0)
        if granularity == "day":
            bucket = bucket.replace(hour=0)
        key = (
            bucket,
            row.organization_id or 0,
            row.team_id or 0,
            row.project_id or 0,
            row.key_id or 0,
            row.served_model or row.routed_model or row.requested_model,
            row.provider,
        )
        counts = cells[key]
        values = [
            1,
            int(row.status >= 400),
            row.input_tokens,
            row.output_tokens,
            row.cache_read_tokens,
            row.cache_write_5m_tokens + row.cache_write_1h_tokens,
            row.cost_micros,
        ]
        for i, value in enumerate(values):
            counts[i] += value
    return dict(cells)


def stored_cells(granularity: str) -> dict[tuple[Any, ...], list[int]]:
    return {
        (cell.bucket_start, *(getattr(cell, d) for d in DIMS)): [getattr(cell, c) for c in COUNTS]
        for cell in SpendRollup.objects.filter(granularity=granularity)
    }


def session_lines() -> dict[tuple[Any, ...], tuple[Any, ...]]:
    return {
        (line.day, line.session_id, line.key_id): (
            line.requests,
            line.agents,
            line.cost_micros,
            line.input_tokens,
            line.first_seen,
            line.last_seen,
        )
        for line in SessionRollup.objects.all()
    }


@pytest.fixture
def two_teams():
    org = factories.organization()
    alpha = factories.virtual_key(team=factories.team(organization=org, name="alpha"))
    beta = factories.virtual_key(team=factories.team(organization=org, name="beta"))
    return org, alpha, beta


def test_hour_and_day_cells_match_the_ledger_per_dimension(two_teams):
    _, alpha, beta = two_teams
    write(
        event(at("2026-11-02 09:05"), key=alpha, cost=1_000),
        event(at("2026-11-02 09:55"), key=alpha, cost=2_000),
        event(at("2026-11-02 09:10"), key=alpha, cost=5_000, served_model="claude-opus-4-1"),
        event(at("2026-11-02 10:00"), key=beta, cost=700, status=529, provider="azure"),
        event(at("2026-11-03 23:59"), key=beta, cost=300),
        event(at("2026-11-03 00:00"), key=beta, cost=11),
    )
    result = roll()
    assert result.rows == 6
    assert stored_cells("hour") == expected_cells("hour")
    assert stored_cells("day") == expected_cells("day")
    nine = SpendRollup.objects.get(
        granularity="hour",
        bucket_start=at("2026-11-02 09:00"),
        key_id=alpha.pk,
        model="claude-sonnet-4-6",
    )
    assert (nine.requests, nine.cost_micros, nine.input_tokens, nine.cache_write_tokens) == (
        2,
        3_000,
        200,
        8,
    )
    errors = SpendRollup.objects.get(granularity="day", provider="azure")
    assert (errors.requests, errors.errors) == (1, 1)


def test_running_twice_gives_the_same_rows(two_teams):
    _, alpha, beta = two_teams
    write(*(event(at(f"2026-11-02 {h:02d}:30"), key=alpha if h % 2 else beta) for h in range(8)))
    roll()
    hours, days, sessions = stored_cells("hour"), stored_cells("day"), session_lines()
    again = roll()
    assert again.rows == 0
    assert stored_cells("hour") == hours
    assert stored_cells("day") == days
    assert session_lines() == sessions


def test_rows_arriving_after_a_run_are_added_once(two_teams):
    _, alpha, _ = two_teams
    write(event(at("2026-11-02 09:05"), key=alpha, cost=1_000))
    roll()
    write(event(at("2026-11-02 09:40"), key=alpha, cost=500))
    roll()
    roll()
    assert stored_cells("hour") == expected_cells("hour")
    assert SpendRollup.objects.get(granularity="day").cost_micros == 1_500


def test_a_late_spooled_row_lands_in_its_own_old_hour(two_teams):
    _, alpha, _ = two_teams
    write(event(at("2026-11-20 12:00"), key=alpha, cost=1_000))
    roll()
    # Replayed from a spool days later: a new id, an old created_at.
    write(event(at("2026-11-17 08:15"), key=alpha, cost=4_000))
    roll()
    old = SpendRollup.objects.get(granularity="hour", bucket_start=at("2026-11-17 08:00"))
    assert old.cost_micros == 4_000
    assert (
        SpendRollup.objects.get(granularity="day", bucket_start=at("2026-11-17 00:00")).requests
        == 1
    )
    assert stored_cells("hour") == expected_cells("hour")


def test_small_batches_give_the_same_cells_as_one_run(two_teams):
    _, alpha, beta = two_teams
    write(
        *(
            event(
                at(f"2026-11-0{1 + i % 3} {i % 24:02d}:{i % 60:02d}"),
                key=alpha if i % 3 else beta,
                cost=i,
            )
            for i in range(40)
        )
    )
    result = roll(batch_rows=7)
    assert result.batches == 6
    assert result.rows == 40
    assert stored_cells("hour") == expected_cells("hour")
    assert stored_cells("day") == expected_cells("day")
    assert (
        RollupCursor.objects.get(name="ledger").last_usage_id == UsageRecord.objects.latest("id").id
    )


def test_missing_dimensions_are_stored_as_zero_and_empty():
    write(
        event(
            at("2026-11-02 09:05"),
            organization_id=None,
            served_model="",
            routed_model="",
            requested_model="claude-x",
            provider="",
        )
    )
    roll()
    cell = SpendRollup.objects.get(granularity="hour")
    assert (cell.organization_id, cell.team_id, cell.key_id, cell.model, cell.provider) == (
        0,
        0,
        0,
        "claude-x",
        "",
    )


def test_sessions_are_rolled_up_per_day_and_key_with_distinct_subagents(two_teams):
    _, alpha, beta = two_teams
    write(
        event(at("2026-11-02 09:00"), key=alpha, session_id="s1", agent_id="", cost=100),
        event(at("2026-11-02 09:01"), key=alpha, session_id="s1", agent_id="a1", cost=200),
        event(at("2026-11-02 09:02"), key=alpha, session_id="s1", agent_id="a2", cost=300),
        event(at("2026-11-02 22:00"), key=beta, session_id="s2", cost=50),
        event(at("2026-11-02 10:00"), key=alpha, cost=999),  # no session
    )
    roll(batch_rows=2)
    # Later rows of the same session: the same subagent again, and a new one.
    write(
        event(at("2026-11-02 11:00"), key=alpha, session_id="s1", agent_id="a1", cost=400),
        event(at("2026-11-02 11:30"), key=alpha, session_id="s1", agent_id="a3", cost=500),
    )
    roll()
    s1 = SessionRollup.objects.get(session_id="s1")
    assert (s1.day, s1.key_id, s1.team_id, s1.organization_id) == (
        dt.date(2026, 11, 2),
        alpha.pk,
        alpha.team_id,
        alpha.organization_id,
    )
    assert (s1.requests, s1.agents, s1.cost_micros, s1.input_tokens) == (5, 3, 1_500, 500)
    assert (s1.first_seen, s1.last_seen) == (at("2026-11-02 09:00"), at("2026-11-02 11:30"))
    assert SessionRollup.objects.count() == 2


def test_subagents_stay_counted_once_after_retention_deleted_their_rows(two_teams):
    """The distinct count is kept by remembering the agents counted, not by re-reading the
    ledger, so rows deleted by retention (or arriving late) cannot lower or double it."""
    _, alpha, _ = two_teams
    write(
        event(at("2026-11-02 09:00"), key=alpha, session_id="s1", agent_id="a1"),
        event(at("2026-11-02 09:01"), key=alpha, session_id="s1", agent_id="a2"),
    )
    roll()
    UsageRecord.objects.all().delete()
    write(
        event(at("2026-11-02 12:00"), key=alpha, session_id="s1", agent_id="a1"),
        event(at("2026-11-02 12:01"), key=alpha, session_id="s1", agent_id="a3"),
        event(at("2026-11-03 08:00"), key=alpha, session_id="s1", agent_id="a1"),  # a new day
    )
    roll(batch_rows=1)
    agents = dict(SessionRollup.objects.values_list("day", "agents"))
    assert agents == {dt.date(2026, 11, 2): 3, dt.date(2026, 11, 3): 1}
    assert SessionRollup.objects.get(day=dt.date(2026, 11, 2)).requests == 4


def test_a_gap_in_ids_wider_than_a_batch_is_crossed(two_teams):
    _, alpha, _ = two_teams
    write(*(event(at(f"2026-11-02 {h:02d}:00"), key=alpha, cost=h) for h in range(10)))
    ids = list(UsageRecord.objects.order_by("id").values_list("id", flat=True))
    UsageRecord.objects.filter(id__in=ids[1:8]).delete()
    result = roll(batch_rows=2)
    assert (result.rows, result.batches, result.cursor) == (3, 2, ids[-1])
    assert stored_cells("hour") == expected_cells("hour")


def test_cells_keep_the_routed_model_and_the_parent_key(two_teams):
    _, alpha, _ = two_teams
    sub = factories.virtual_key(parent=alpha)
    write(
        event(
            at("2026-11-02 09:00"),
            key=sub,
            routed_model="claude-opus-4-1",
            served_model="claude-opus-4-1-20250805",
        ),
    )
    roll()
    for cell in SpendRollup.objects.all():
        assert (cell.model, cell.routed_model) == ("claude-opus-4-1-20250805", "claude-opus-4-1")
        assert (cell.key_id, cell.parent_key_id) == (sub.pk, alpha.pk)


def test_a_session_across_midnight_has_a_line_per_day(two_teams):
    _, alpha, _ = two_teams
    write(
        event(at("2026-11-02 23:50"), key=alpha, session_id="night", cost=10),
        event(at("2026-11-03 00:10"), key=alpha, session_id="night", cost=20),
    )
    roll()
    assert sorted(SessionRollup.objects.values_list("day", "cost_micros")) == [
        (dt.date(2026, 11, 2), 10),
        (dt.date(2026, 11, 3), 20),
    ]


def test_the_watermark_waits_until_rows_have_settled(two_teams):
    """Rows are rolled up only once the id horizon they are under is settle_seconds old, so a
    writer that commits late (a lower id after a higher one) is never skipped."""
    _, alpha, _ = two_teams
    write(event(at("2026-11-02 09:00"), key=alpha))
    first = rollups.run_rollups(settle_seconds=30)
    assert first.rows == 0  # the horizon was just taken
    horizon = RollupCursor.objects.get(name="ledger.horizon")
    assert horizon.last_usage_id == UsageRecord.objects.get().id
    write(event(at("2026-11-02 09:10"), key=alpha))
    assert rollups.run_rollups(settle_seconds=30).rows == 0  # not settled yet
    RollupCursor.objects.filter(name="ledger.horizon").update(
        updated_at=timezone.now() - dt.timedelta(seconds=31)
    )
    settled = rollups.run_rollups(settle_seconds=30)
    assert settled.rows == 1  # only the row under the settled horizon
    RollupCursor.objects.filter(name="ledger.horizon").update(
        updated_at=timezone.now() - dt.timedelta(seconds=31)
    )
    assert rollups.run_rollups(settle_seconds=30).rows == 1
    assert stored_cells("hour") == expected_cells("hour")


def test_settle_time_comes_from_settings(settings, two_teams):
    _, alpha, _ = two_teams
    settings.GATEWAY_ROLLUP_SETTLE_SECONDS = 0
    write(event(at("2026-11-02 09:00"), key=alpha))
    assert rollups.run_rollups().rows == 1


# --- selectors ---------------------------------------------------------------------------


@pytest.fixture
def month_of_spend(two_teams):
    org, alpha, beta = two_teams
    write(
        event(at("2026-11-01 00:30"), key=alpha, cost=1_000, session_id="s-a"),
        event(at("2026-11-01 23:30"), key=beta, cost=2_000, served_model="claude-opus-4-1"),
        event(at("2026-11-02 12:00"), key=alpha, cost=4_000, session_id="s-a"),
        event(at("2026-11-15 08:00"), key=beta, cost=8_000, session_id="s-b"),
        event(at("2026-12-01 00:00"), key=alpha, cost=16_000),  # outside November
    )
    roll()
    # Not rolled up yet: the selectors must read them from the ledger.
    write(
        event(at("2026-11-15 09:00"), key=alpha, cost=32_000, session_id="s-c"),
        event(at("2026-11-15 09:30"), key=beta, cost=64, session_id="s-b"),
    )
    return org, alpha, beta


NOV = (at("2026-11-01 00:00"), at("2026-12-01 00:00"))


def by(points: list[rollups.SeriesPoint], attr: str = "cost_micros") -> dict[Any, Any]:
    return {(p.bucket, p.group): getattr(p, attr) for p in points}


def test_spend_series_by_team_per_day_includes_rows_not_rolled_up(month_of_spend):
    org, alpha, beta = month_of_spend
    points = rollups.spend_series(org.pk, *NOV, group_by="team", granularity="day")
    assert by(points) == {
        (at("2026-11-01 00:00"), alpha.team_id): 1_000,
        (at("2026-11-01 00:00"), beta.team_id): 2_000,
        (at("2026-11-02 00:00"), alpha.team_id): 4_000,
        (at("2026-11-15 00:00"), beta.team_id): 8_064,
        (at("2026-11-15 00:00"), alpha.team_id): 32_000,
    }
    assert [p.bucket for p in points] == sorted(p.bucket for p in points)


def test_series_are_the_same_before_and_after_the_rollup_runs(month_of_spend):
    org, *_ = month_of_spend
    args = (org.pk, *NOV)
    before = [rollups.spend_series(*args, group_by=g) for g in ("team", "model", "key", "provider")]
    before_hourly = rollups.spend_series(*args, granularity="hour", group_by="project")
    roll()
    after = [rollups.spend_series(*args, group_by=g) for g in ("team", "model", "key", "provider")]
    assert after == before
    assert rollups.spend_series(*args, granularity="hour", group_by="project") == before_hourly


def test_spend_series_by_model_per_hour(month_of_spend):
    org, *_ = month_of_spend
    points = rollups.spend_series(
        org.pk, at("2026-11-01 00:00"), at("2026-11-02 00:00"), group_by="model", granularity="hour"
    )
    assert by(points) == {
        (at("2026-11-01 00:00"), "claude-sonnet-4-6"): 1_000,
        (at("2026-11-01 23:00"), "claude-opus-4-1"): 2_000,
    }
    assert points[0].requests == 1
    assert points[0].tokens == 129


def test_daily_series_in_the_organizations_time_zone(month_of_spend):
    org, *_ = month_of_spend
    zone = "America/New_York"  # daylight saving time ends on 2026-11-01
    points = rollups.spend_series(
        org.pk, at("2026-11-01 05:00"), at("2026-11-03 05:00"), granularity="day", tz=zone
    )
    local = {p.bucket.strftime("%Y-%m-%d %z"): p.cost_micros for p in points}
    # 00:30 UTC on the 1st is still October 31st in New York; local midnights keep their offset.
    assert local == {"2026-11-01 -0400": 2_000, "2026-11-02 -0500": 4_000}


ZONES = ["UTC", "America/New_York", "Asia/Kolkata", "Asia/Tokyo", "Pacific/Kiritimati"]


def local_series(zone: str, granularity: str, start: dt.datetime, end: dt.datetime, group: str):
    """What spend_series should say, from the ledger row by row: each row counts in the local
    day (or hour) of its UTC hour's start."""
    expected: dict[tuple[dt.datetime, Any], int] = defaultdict(int)
    for row in UsageRecord.objects.filter(created_at__gte=start, created_at__lt=end):
        hour = row.created_at.astimezone(dt.UTC).replace(minute=0, second=0, microsecond=0)
        local = hour.astimezone(zoneinfo.ZoneInfo(zone))
        if granularity == "day":
            local = local.replace(hour=0, minute=0)
        expected[local, getattr(row, group)] += row.cost_micros
    return dict(expected)


@pytest.mark.parametrize("zone", ZONES)
def test_series_in_any_zone_match_the_ledger_per_local_day_and_hour(two_teams, zone):
    """Whole UTC days are read as day cells and the hours a zone's offset moves across midnight
    as hour cells (added to their day, taken off the day cell's): the same figures as hour by
    hour, across a change of daylight saving time (New York, 2026-11-01)."""
    org, alpha, beta = two_teams
    write(
        *(
            event(
                at("2026-10-29 00:10") + dt.timedelta(minutes=97 * i),
                key=(alpha, beta)[i % 2],
                cost=1 + i,
            )
            for i in range(110)
        )
    )
    roll()
    write(
        *(
            event(at("2026-11-03 20:05") + dt.timedelta(hours=i), key=beta, cost=1_000)
            for i in range(9)
        )
    )
    start, end = at("2026-10-29 00:00"), at("2026-11-05 00:00")
    for granularity in ("day", "hour"):
        points = rollups.spend_series(
            org.pk, start, end, group_by="team", granularity=granularity, tz=zone
        )
        assert by(points) == local_series(zone, granularity, start, end, "team_id")
        assert all(p.requests > 0 for p in points)


def test_the_repeated_hour_when_daylight_saving_time_ends_is_two_points(two_teams):
    org, alpha, _ = two_teams
    write(
        event(at("2026-11-01 05:30"), key=alpha, cost=1),  # 01:30 EDT
        event(at("2026-11-01 06:30"), key=alpha, cost=2),  # 01:30 EST
    )
    roll()
    points = rollups.spend_series(
        org.pk,
        at("2026-11-01 04:00"),
        at("2026-11-01 08:00"),
        granularity="hour",
        tz="America/New_York",
    )
    assert [(p.bucket.astimezone(dt.UTC), p.cost_micros) for p in points] == [
        (at("2026-11-01 05:00"), 1),
        (at("2026-11-01 06:00"), 2),
    ]


def test_one_read_of_the_cells_serves_every_group_by(month_of_spend):
    org, *_ = month_of_spend
    args = (org.pk, *NOV)
    zone = "America/New_York"
    with CaptureQueriesContext(connection) as queries:
        breakdown = rollups.spend_breakdown(*args, group_bys=["team", "model", "project"], tz=zone)
    cell_reads = [q for q in queries if "telemetry_spendrollup" in q["sql"]]
    assert len(cell_reads) == 2  # day cells, and the hours around local midnights
    for group_by in ("team", "model", "project"):
        assert breakdown[group_by] == rollups.spend_series(*args, group_by=group_by, tz=zone)


def test_totals_and_filters(month_of_spend):
    org, alpha, beta = month_of_spend
    teams = {t.group: t.cost_micros for t in rollups.totals(org.pk, *NOV, group_by="team")}
    assert teams == {alpha.team_id: 37_000, beta.team_id: 10_064}
    only_beta = rollups.totals(org.pk, *NOV, group_by="model", filters={"team": beta.team_id})
    assert {t.group: t.cost_micros for t in only_beta} == {
        "claude-opus-4-1": 2_000,
        "claude-sonnet-4-6": 8_064,
    }
    (everything,) = rollups.totals(org.pk, *NOV)
    assert everything.cost_micros == 47_064
    assert str(everything.cost_usd) == "0.047064"


def test_ranges_not_on_whole_days_read_hour_cells_at_the_edges(month_of_spend):
    org, *_ = month_of_spend
    (part,) = rollups.totals(org.pk, at("2026-11-01 12:00"), at("2026-11-15 08:30"))
    assert part.cost_micros == 2_000 + 4_000 + 8_000  # 08:30 widens to the whole 08:00 hour


def test_top_keys(month_of_spend):
    org, alpha, beta = month_of_spend
    top = rollups.top_keys(org.pk, *NOV, limit=1)
    assert [(k.group, k.cost_micros, k.requests) for k in top] == [(alpha.pk, 37_000, 3)]
    assert [k.group for k in rollups.top_keys(org.pk, *NOV)] == [alpha.pk, beta.pk]


def test_top_sessions_merge_rolled_up_and_recent_rows(month_of_spend):
    org, alpha, beta = month_of_spend
    top = rollups.top_sessions(org.pk, *NOV, limit=2)
    assert [(s.session_id, s.cost_micros, s.requests) for s in top] == [
        ("s-c", 32_000, 1),  # only in the ledger so far
        ("s-b", 8_064, 2),  # one row rolled up, one not
    ]
    assert top[1].key_id == beta.pk
    assert top[1].first_seen == at("2026-11-15 08:00")
    assert top[1].last_seen == at("2026-11-15 09:30")
    s_a = rollups.top_sessions(org.pk, *NOV, limit=5, key_id=alpha.pk)
    assert [(s.session_id, s.cost_micros) for s in s_a] == [("s-c", 32_000), ("s-a", 5_000)]


def test_selectors_refuse_unknown_groups_and_filters(month_of_spend):
    org, *_ = month_of_spend
    with pytest.raises(ValueError, match="group"):
        rollups.spend_series(org.pk, *NOV, group_by="status")
    with pytest.raises(ValueError, match="filter"):
        rollups.totals(org.pk, *NOV, filters={"status": 200})


def test_other_organizations_are_not_counted(month_of_spend):
    org, *_ = month_of_spend
    other_key = factories.virtual_key()
    write(event(at("2026-11-10 10:00"), key=other_key, cost=123_456))
    roll()
    (everything,) = rollups.totals(org.pk, *NOV)
    assert everything.cost_micros == 47_064


def test_recent_costs_include_the_current_hour_whether_rolled_up_or_not(two_teams):
    org, alpha, beta = two_teams
    other = factories.virtual_key(organization=factories.organization(name="globex"))
    now = at("2026-11-15 09:40")
    write(
        event(at("2026-11-08 09:30"), key=alpha, cost=1),  # in the hour 7 days ago: left out
        event(at("2026-11-08 10:00"), key=alpha, cost=10),  # the first whole hour of the week
        event(at("2026-11-12 12:00"), key=beta, cost=200, served_model="claude-opus-4-1"),
        event(at("2026-11-15 08:59"), key=alpha, cost=3_000),
        event(at("2026-11-15 09:05"), key=alpha, cost=40_000),  # the current hour, rolled up
        event(at("2026-11-15 09:10"), key=other, cost=500_000),
    )
    roll()
    write(event(at("2026-11-15 09:35"), key=alpha, cost=6_000_000))  # not rolled up yet

    orgs, week = [org.pk, other.organization_id], (now - dt.timedelta(days=7), now)
    costs = rollups.recent_costs(orgs, *week)

    def cell(key: Any, model: str = "claude-sonnet-4-6") -> rollups.RateCell:
        return (key.organization_id, key.team_id or 0, 0, key.pk, model, "anthropic")

    assert costs == {
        cell(alpha): 10 + 3_000 + 40_000 + 6_000_000,
        cell(beta, "claude-opus-4-1"): 200,
        cell(other): 500_000,
    }
    roll()
    assert rollups.recent_costs(orgs, *week) == costs
    assert sum(rollups.recent_costs([org.pk], *week).values()) == 6_043_210


# --- two workers at once -------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_two_workers_rolling_up_at_once_count_each_row_once():
    if not is_postgres():
        pytest.skip("SQLite serializes writers; concurrency is exercised on PostgreSQL")
    org = factories.organization()
    keys = [factories.virtual_key(organization=org) for _ in range(3)]
    stop = threading.Event()
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            for batch in range(40):
                write(
                    *(
                        event(
                            at(f"2026-11-{1 + (batch + i) % 5:02d} {(batch * 7 + i) % 24:02d}:10"),
                            key=keys[i % 3],
                            cost=1 + i,
                            session_id=f"s{i % 4}",
                            agent_id=f"a{i % 3}",
                        )
                        for i in range(25)
                    )
                )
        except BaseException as exc:
            errors.append(exc)
        finally:
            stop.set()
            connection.close()

    def worker() -> None:
        try:
            while not stop.is_set():
                rollups.run_rollups(settle_seconds=0, batch_rows=60)
            rollups.run_rollups(settle_seconds=0, batch_rows=60)
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=writer)] + [
        threading.Thread(target=worker) for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors
    roll()
    assert UsageRecord.objects.count() == 1_000
    assert stored_cells("hour") == expected_cells("hour")
    assert stored_cells("day") == expected_cells("day")
    lines = SessionRollup.objects.all()
    assert sum(line.requests for line in lines) == 1_000
    assert {line.agents for line in lines} <= {1, 2, 3}
