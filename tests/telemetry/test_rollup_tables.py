"""Report tables from the rollups: several dimensions at once, filters by collections, sessions
per day, each equal to the ledger summed row by row, rolled up or not."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from typing import Any

import pytest

from telemetry import rollups
from telemetry.models import UsageRecord
from tests import factories
from tests.telemetry.usage_events import at, event, write

pytestmark = pytest.mark.django_db


@pytest.fixture
def org_data() -> dict[str, Any]:
    org = factories.organization(name="acme", timezone="Europe/Berlin")
    ml, web = (factories.team(organization=org, name=n) for n in ("ml", "web"))
    keys = {
        "ml": factories.virtual_key(team=ml, name="ml-ci"),
        "web": factories.virtual_key(team=web, name="web-dev"),
    }
    rows = []
    for hour in range(0, 72, 5):
        moment = at("2026-11-02 00:30") + dt.timedelta(hours=hour)
        for i, (name, key) in enumerate(keys.items()):
            model = "claude-opus-4-1" if hour % 2 else "claude-sonnet-4-6"
            rows.append(
                event(
                    moment,
                    key=key,
                    cost=1_000 * (hour + 1) + i,
                    served_model=model,
                    session_id=f"s-{name}-{hour // 24}",
                )
            )
    write(*rows)
    return {"org": org, "teams": {"ml": ml, "web": web}, "keys": keys}


def ledger_sums(group: Any, start: dt.datetime, end: dt.datetime) -> dict[Any, int]:
    sums: dict[Any, int] = defaultdict(int)
    for row in UsageRecord.objects.filter(created_at__gte=start, created_at__lt=end):
        sums[group(row)] += row.cost_micros
    return dict(sums)


@pytest.mark.parametrize("rolled", [False, True])
def test_a_table_by_team_and_model_per_day_equals_the_ledger(org_data, rolled):
    if rolled:
        rollups.run_rollups(settle_seconds=0)
    start, end = at("2026-11-01 23:00"), at("2026-11-05 23:00")  # Berlin days

    table = rollups.spend_table(
        org_data["org"].pk,
        start,
        end,
        dimensions=["team", "model"],
        granularity="day",
        tz="Europe/Berlin",
    )

    def group(row: UsageRecord) -> Any:
        berlin = row.created_at.astimezone(dt.timezone(dt.timedelta(hours=1))).date()
        return (berlin.isoformat(), row.team_id, row.served_model)

    got = {
        (line.bucket.date().isoformat(), *line.groups): line.cost_micros  # type: ignore[union-attr]
        for line in table
    }
    assert got == ledger_sums(group, start, end)


@pytest.mark.parametrize("rolled", [False, True])
def test_a_team_filter_reads_only_those_teams(org_data, rolled):
    if rolled:
        rollups.run_rollups(settle_seconds=0)
    ml = org_data["teams"]["ml"]
    start, end = at("2026-11-01 00:00"), at("2026-11-06 00:00")

    table = rollups.spend_table(
        org_data["org"].pk, start, end, dimensions=["key"], filters={"team": [ml.pk]}
    )

    assert [(line.bucket, line.groups) for line in table] == [(None, (org_data["keys"]["ml"].pk,))]
    expected = ledger_sums(lambda row: row.team_id, start, end)[ml.pk]
    assert table[0].cost_micros == expected


def test_unknown_dimensions_are_refused(org_data):
    with pytest.raises(ValueError, match="cannot group"):
        rollups.spend_table(
            org_data["org"].pk, at("2026-11-01 00:00"), at("2026-11-02 00:00"), dimensions=["user"]
        )


@pytest.mark.parametrize("rolled", [False, True])
def test_session_lines_per_day_equal_the_ledger(org_data, rolled):
    if rolled:
        rollups.run_rollups(settle_seconds=0)
    web_key = org_data["keys"]["web"]

    table = rollups.session_table(
        org_data["org"].pk,
        dt.date(2026, 11, 1),
        dt.date(2026, 11, 6),
        dimensions=["day", "session", "key"],
        filters={"key": [web_key.pk]},
    )

    def group(row: UsageRecord) -> Any:
        return (row.created_at.date(), row.session_id, row.key_id)

    expected = {
        g: cost
        for g, cost in ledger_sums(group, at("2026-11-01 00:00"), at("2026-11-07 00:00")).items()
        if g[2] == web_key.pk
    }
    assert {(line.bucket, *line.groups): line.cost_micros for line in table} == expected
