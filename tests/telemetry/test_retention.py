from __future__ import annotations

import datetime as dt

import pytest

from governance.models import AuditEvent
from telemetry import retention, rollups
from telemetry.models import SpendRollup, UsageRecord
from tests import factories
from tests.telemetry.usage_events import at, event, write

pytestmark = pytest.mark.django_db

NOW = at("2026-11-18 12:00")


def days_ago(days: float) -> dt.datetime:
    return NOW - dt.timedelta(days=days)


def roll() -> None:
    rollups.run_rollups(settle_seconds=0)


def costs() -> list[int]:
    return sorted(UsageRecord.objects.values_list("cost_micros", flat=True))


def test_rows_past_the_organizations_retention_are_deleted_and_rollups_kept():
    key = factories.virtual_key(organization=factories.organization(log_retention_days=30))
    write(
        event(days_ago(45), key=key, cost=1),
        event(days_ago(31), key=key, cost=2),
        event(days_ago(29), key=key, cost=3),
        event(days_ago(1), key=key, cost=4),
    )
    roll()
    rolled = sum(
        SpendRollup.objects.filter(granularity="day").values_list("cost_micros", flat=True)
    )
    audit_events = AuditEvent.objects.count()
    result = retention.enforce_retention(now=NOW)
    assert result.deleted == 2
    assert result.by_organization == {key.organization_id: 2}
    assert costs() == [3, 4]
    assert (
        sum(SpendRollup.objects.filter(granularity="day").values_list("cost_micros", flat=True))
        == rolled
    )
    assert AuditEvent.objects.count() == audit_events
    assert retention.enforce_retention(now=NOW).deleted == 0  # idempotent


def test_rows_not_rolled_up_yet_are_never_deleted():
    key = factories.virtual_key(organization=factories.organization(log_retention_days=7))
    write(event(days_ago(10), key=key, cost=1))
    roll()
    write(event(days_ago(20), key=key, cost=2))  # a late replay, above the watermark
    assert retention.enforce_retention(now=NOW).deleted == 1
    assert costs() == [2]
    roll()
    assert retention.enforce_retention(now=NOW).deleted == 1
    assert costs() == []
    assert (
        SpendRollup.objects.get(granularity="day", bucket_start=at("2026-10-29 00:00")).cost_micros
        == 2
    )


def test_each_organization_has_its_own_retention():
    short = factories.virtual_key(organization=factories.organization(log_retention_days=3))
    long = factories.virtual_key(organization=factories.organization(log_retention_days=365))
    write(event(days_ago(10), key=short, cost=1), event(days_ago(10), key=long, cost=2))
    roll()
    retention.enforce_retention(now=NOW)
    assert costs() == [2]


def test_rows_of_a_budgets_current_period_are_kept():
    """Budget counters and period records are rebuilt from the current period's ledger rows."""
    org = factories.organization(log_retention_days=1)
    key = factories.virtual_key(organization=org)
    factories.budget(owner=org, amount_micros=1_000, period="month")
    factories.budget(owner=key, amount_micros=1_000, period="lifetime")  # holds nothing back
    write(
        event(at("2026-10-31 10:00"), key=key, cost=1),
        event(at("2026-11-01 00:00"), key=key, cost=2),
        event(at("2026-11-10 10:00"), key=key, cost=3),
    )
    roll()
    assert retention.enforce_retention(now=NOW).deleted == 1
    assert costs() == [2, 3]
    cutoff = retention.organization_cutoff(org, org.budgets.all(), NOW)
    assert cutoff == at("2026-11-01 00:00")


def test_deletes_in_batches():
    key = factories.virtual_key(organization=factories.organization(log_retention_days=1))
    write(*(event(days_ago(2 + i / 24), key=key, cost=i) for i in range(11)))
    roll()
    assert retention.enforce_retention(now=NOW, batch_size=3).deleted == 11
    assert costs() == []


def test_rows_of_organizations_that_are_gone_get_the_default_retention():
    default = retention.default_retention_days()
    write(
        event(days_ago(default + 1), organization_id=987_654, cost=1),
        event(days_ago(default - 1), organization_id=987_654, cost=2),
        event(days_ago(default + 1), organization_id=None, cost=3),
    )
    roll()
    assert retention.enforce_retention(now=NOW).deleted == 2
    assert costs() == [2]


def test_only_the_named_organizations_are_cleaned():
    first = factories.virtual_key(organization=factories.organization(log_retention_days=1))
    second = factories.virtual_key(organization=factories.organization(log_retention_days=1))
    write(event(days_ago(5), key=first, cost=1), event(days_ago(5), key=second, cost=2))
    roll()
    retention.enforce_retention(now=NOW, organization_ids=[second.organization_id])
    assert costs() == [1]
