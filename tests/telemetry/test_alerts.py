"""Budget alerts end to end: ledger spend in, AlertEvents and deliveries out, at a fixed `now`."""

from __future__ import annotations

import datetime as dt
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from django.db import connection
from django.test import Client

from governance.models import Budget, Organization, Team
from governance.services import common
from telemetry import alerts, channels, ledger
from telemetry.models import AlertChannel, AlertEvent
from tests import factories
from tests.fakes.webhook_receiver import WebhookReceiver

pytestmark = pytest.mark.django_db

# 00:30 on Nov 11 in Berlin: the UTC date and the organization's date differ on purpose.
NOW = dt.datetime(2026, 11, 10, 23, 30, tzinfo=dt.UTC)
# In November's period (it starts Oct 31 23:00 UTC) but before the 7-day window: spend here
# counts for thresholds and not for the burn rate.
EARLY_NOVEMBER = dt.datetime(2026, 11, 2, 12, 0, tzinfo=dt.UTC)
MINUTE = dt.timedelta(minutes=1)
USD = 1_000_000


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    server = WebhookReceiver().start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(channels, "RETRY_BACKOFF_SECONDS", (0.0, 0.0))


@pytest.fixture
def org() -> Organization:
    return factories.organization(name="acme", timezone="Europe/Berlin")


@pytest.fixture
def team(org: Organization) -> Team:
    return factories.team(organization=org, name="ml")


def add_channel(org: Organization, kind: str, target: str, name: str = "") -> AlertChannel:
    channel = AlertChannel(organization_id=org.pk, name=name or kind, kind=kind, target=target)
    channels.save_channel(channel, actor=factories.TEST_ACTOR)
    return channel


def spend(
    team: Team,
    at: dt.datetime,
    micros: int,
    *,
    model: str = "claude-sonnet-4-5",
) -> None:
    ledger.write_events(
        [
            {
                "request_id": uuid.uuid4().hex,
                "created_at": at,
                "organization_id": team.organization_id,
                "team_id": team.pk,
                "routed_model": model,
                "served_model": model,
                "provider": "anthropic",
                "status": 200,
                "cost_micros": micros,
            }
        ]
    )


def monthly(team: Team, usd: int, **fields: Any) -> Budget:
    return factories.budget(owner=team, amount_micros=usd * USD, period="month", **fields)


def events(**filters: Any) -> list[AlertEvent]:
    return list(AlertEvent.objects.filter(**filters).order_by("kind", "threshold_percent"))


# --- thresholds ----------------------------------------------------------------------------


def test_threshold_alert_is_sent_once_with_the_right_numbers(
    org: Organization, team: Team, receiver: WebhookReceiver
) -> None:
    add_channel(org, "webhook", receiver.url())
    budget = monthly(team, 100)
    spend(team, EARLY_NOVEMBER, 55 * USD)

    assert alerts.run_alerts(now=NOW) == 1
    assert alerts.run_alerts(now=NOW + MINUTE) == 0

    [event] = events()
    assert (event.kind, event.threshold_percent, event.period_label) == ("threshold", 50, "2026-11")
    assert (event.spent_micros, event.limit_micros) == (55 * USD, 100 * USD)
    assert event.delivered_at == NOW
    [body] = receiver.bodies()
    assert body["alert_id"] == event.pk
    assert body["budget"]["id"] == budget.pk
    assert (body["scope"], body["owner"]["name"]) == ("team", "ml")
    assert body["period"]["label"] == "2026-11"
    assert body["threshold_percent"] == 50
    assert (body["spent_micros"], body["spent_usd"]) == (55_000_000, "55.000000")
    assert (body["limit_micros"], body["limit_usd"]) == (100_000_000, "100.000000")
    assert body["percent_used"] == "55.00"
    assert body["forecast"] is None
    assert (
        body["message"]
        == event.message
        == (
            'Team "ml" has spent $55.00 of its monthly budget of $100.00 (55%), passing the 50% '
            "alert threshold. It resets on Dec 1 (Europe/Berlin)."
        )
    )


def test_crossing_50_then_80_sends_two_alerts(
    org: Organization, team: Team, receiver: WebhookReceiver
) -> None:
    add_channel(org, "webhook", receiver.url())
    monthly(team, 100)
    spend(team, EARLY_NOVEMBER, 55 * USD)
    assert alerts.run_alerts(now=NOW) == 1

    spend(team, EARLY_NOVEMBER, 30 * USD)
    assert alerts.run_alerts(now=NOW + MINUTE) == 1
    assert alerts.run_alerts(now=NOW + 2 * MINUTE) == 0

    assert [e.threshold_percent for e in events()] == [50, 80]
    assert [b["threshold_percent"] for b in receiver.bodies()] == [50, 80]
    assert receiver.bodies()[1]["spent_micros"] == 85 * USD


def test_jumping_past_several_thresholds_sends_only_the_highest(
    org: Organization, team: Team, receiver: WebhookReceiver
) -> None:
    add_channel(org, "webhook", receiver.url())
    monthly(team, 100)
    spend(team, EARLY_NOVEMBER, 85 * USD)

    assert alerts.run_alerts(now=NOW) == 1

    fifty, eighty = events()
    assert receiver.bodies()[0]["threshold_percent"] == 80
    assert fifty.delivered_at == NOW  # recorded, so it never fires later this month
    assert fifty.delivery_log[0]["silent"] is True
    assert "the 80% alert was sent instead" in fifty.delivery_log[0]["detail"]
    assert eighty.delivery_log[0]["ok"] is True

    spend(team, EARLY_NOVEMBER, 20 * USD)
    assert alerts.run_alerts(now=NOW + MINUTE) == 1
    last = receiver.bodies()[-1]
    assert last["threshold_percent"] == 100
    assert "the budget is exhausted and requests are now refused" in last["message"]
    assert len(receiver.requests) == 2


def test_a_threshold_added_below_one_already_sent_is_recorded_silently(
    org: Organization, team: Team, receiver: WebhookReceiver
) -> None:
    add_channel(org, "webhook", receiver.url())
    budget = monthly(team, 100)
    spend(team, EARLY_NOVEMBER, 85 * USD)
    alerts.run_alerts(now=NOW)

    budget.alert_thresholds = [50, 60, 80, 100]
    common.save_instance(budget, actor=factories.TEST_ACTOR)
    assert alerts.run_alerts(now=NOW + MINUTE) == 0

    sixty = AlertEvent.objects.get(threshold_percent=60)
    assert sixty.delivery_log[0]["silent"] is True
    assert len(receiver.requests) == 1


def test_each_period_alerts_again(org: Organization, team: Team, receiver: WebhookReceiver) -> None:
    add_channel(org, "webhook", receiver.url())
    monthly(team, 100)
    spend(team, EARLY_NOVEMBER, 55 * USD)
    alerts.run_alerts(now=NOW)

    december = dt.datetime(2026, 12, 3, 12, 0, tzinfo=dt.UTC)
    alerts.run_alerts(now=december)  # December has no spend yet
    spend(team, december, 60 * USD)
    alerts.run_alerts(now=december + MINUTE)

    assert [e.period_label for e in events(kind="threshold")] == ["2026-11", "2026-12"]
    assert [b["period"]["label"] for b in receiver.bodies() if b["type"] == "budget.threshold"] == [
        "2026-11",
        "2026-12",
    ]


def test_a_model_tier_budget_counts_only_its_models(
    org: Organization, team: Team, receiver: WebhookReceiver
) -> None:
    add_channel(org, "webhook", receiver.url())
    monthly(team, 100, model_patterns=["claude-opus-*"])
    spend(team, EARLY_NOVEMBER, 90 * USD, model="claude-sonnet-4-5")
    spend(team, EARLY_NOVEMBER, 10 * USD, model="claude-opus-4-1")
    assert alerts.run_alerts(now=NOW) == 0

    spend(team, EARLY_NOVEMBER, 45 * USD, model="claude-opus-4-1")
    assert alerts.run_alerts(now=NOW + MINUTE) == 1
    [body] = receiver.bodies()
    assert body["spent_micros"] == 55 * USD
    assert "monthly budget for claude-opus-*" in body["message"]


def test_an_empty_budget_never_alerts(org: Organization, team: Team) -> None:
    monthly(team, 0)
    spend(team, EARLY_NOVEMBER, 5 * USD)
    assert alerts.run_alerts(now=NOW) == 0
    assert events() == []


# --- forecast ------------------------------------------------------------------------------


def test_forecast_names_the_exhaustion_day_in_the_organization_time_zone(
    org: Organization, team: Team, receiver: WebhookReceiver
) -> None:
    add_channel(org, "webhook", receiver.url())
    monthly(team, 1500, alert_thresholds=[90])
    spend(team, EARLY_NOVEMBER, 100 * USD)  # this month, not this week
    spend(team, dt.datetime(2026, 11, 5, 9, 0, tzinfo=dt.UTC), 350 * USD)
    spend(team, dt.datetime(2026, 11, 9, 9, 0, tzinfo=dt.UTC), 350 * USD)

    assert alerts.run_alerts(now=NOW) == 1
    assert alerts.run_alerts(now=NOW + MINUTE) == 0

    # $700 in 7 days is $100/day; the $700 left of $1,500 lasts exactly 7 more days: Nov 17
    # 23:30 UTC, which is already Nov 18 in Berlin.
    [event] = events()
    assert event.kind == "forecast"
    assert event.forecast_exhaustion == dt.datetime(2026, 11, 17, 23, 30, tzinfo=dt.UTC)
    assert event.message == (
        'At the last 7 days\' rate ($100.00/day), team "ml" exhausts its monthly budget of '
        "$1,500.00 on Nov 18 (Europe/Berlin)."
    )
    [body] = receiver.bodies()
    assert body["type"] == "budget.forecast"
    assert body["threshold_percent"] is None
    assert (body["spent_micros"], body["limit_micros"]) == (800 * USD, 1500 * USD)
    assert body["forecast"] == {
        "exhaustion_at": "2026-11-17T23:30:00+00:00",
        "exhaustion_date": "2026-11-18",
        "timezone": "Europe/Berlin",
        "window_days": 7,
        "window_spent_micros": 700 * USD,
        "window_spent_usd": "700.000000",
        "daily_rate_micros": 100 * USD,
        "daily_rate_usd": "100.000000",
    }


def test_no_forecast_when_the_budget_lasts_the_period(org: Organization, team: Team) -> None:
    monthly(team, 5000, alert_thresholds=[90])
    spend(team, dt.datetime(2026, 11, 9, 9, 0, tzinfo=dt.UTC), 700 * USD)

    assert alerts.run_alerts(now=NOW) == 0
    assert events() == []


def test_no_forecast_once_the_budget_is_exhausted(org: Organization, team: Team) -> None:
    monthly(team, 100, alert_thresholds=[100])
    spend(team, dt.datetime(2026, 11, 9, 9, 0, tzinfo=dt.UTC), 120 * USD)

    alerts.run_alerts(now=NOW)

    assert [e.kind for e in events()] == ["threshold"]


def test_lifetime_budget_is_forecast_by_rate_within_the_horizon(
    org: Organization, team: Team
) -> None:
    soon = factories.budget(
        owner=team, amount_micros=1000 * USD, period="lifetime", alert_thresholds=[]
    )
    factories.budget(
        owner=team, amount_micros=10_000 * USD, period="lifetime", alert_thresholds=[]
    )  # at $100/day it lasts 93 more days: beyond the 30-day horizon
    spend(team, dt.datetime(2026, 11, 9, 9, 0, tzinfo=dt.UTC), 700 * USD)

    alerts.run_alerts(now=NOW)

    [event] = events()
    assert (event.budget_id, event.period_label) == (soon.pk, "lifetime")
    assert event.forecast_exhaustion == NOW + dt.timedelta(days=3)
    assert event.message.endswith(
        "exhausts its lifetime budget of $1,000.00 on Nov 14 (Europe/Berlin)."
    )


@pytest.mark.parametrize("period", ["month", "lifetime"])
@pytest.mark.parametrize("recent_micros", [200, 1])
def test_a_tiny_burn_rate_against_a_large_budget_forecasts_no_exhaustion(
    org: Organization, team: Team, period: str, recent_micros: int
) -> None:
    # $0.0002 (or one micro-dollar) a week against $20,000: exhaustion is hundreds of thousands
    # of years away, past the last date a datetime can hold.
    budget = factories.budget(
        owner=team, amount_micros=20_000 * USD, period=period, alert_thresholds=[]
    )
    spend(team, NOW - dt.timedelta(days=1), recent_micros)

    assert alerts.evaluate_budget(budget, now=NOW) == []
    assert alerts.run_alerts(now=NOW) == 0
    assert events() == []


def test_forecast_exactly_at_the_period_end_is_no_exhaustion(org: Organization, team: Team) -> None:
    # November ends Nov 30 23:00 UTC (midnight in Berlin), 20 days after NOW. $70 this week is
    # $10/day, so $200 left runs out exactly at the period end: the budget lasts the period.
    budget = monthly(team, 270, alert_thresholds=[])
    spend(team, NOW - dt.timedelta(days=1), 70 * USD)

    assert alerts.evaluate_budget(budget, now=NOW) == []
    budget.amount_micros = 269 * USD  # a dollar less runs out before it
    budget.save()
    [event] = alerts.evaluate_budget(budget, now=NOW)
    assert event.kind == "forecast"
    assert event.forecast_exhaustion is not None
    assert event.forecast_exhaustion < dt.datetime(2026, 11, 30, 23, 0, tzinfo=dt.UTC)


# --- delivery ------------------------------------------------------------------------------


def test_failed_delivery_is_retried_on_the_next_run_and_never_recreated(
    org: Organization, team: Team, receiver: WebhookReceiver
) -> None:
    add_channel(org, "webhook", receiver.url())
    monthly(team, 100)
    spend(team, EARLY_NOVEMBER, 55 * USD)
    receiver.script(500, 500, 500)

    assert alerts.run_alerts(now=NOW) == 0
    [event] = events()
    assert event.delivered_at is None and event.attempts == 1
    assert event.next_attempt_at == NOW + MINUTE
    assert event.delivery_log[-1]["ok"] is False
    assert event.delivery_log[-1]["detail"].startswith("HTTP 500")

    assert alerts.run_alerts(now=NOW + MINUTE / 2) == 0  # not due yet
    assert len(receiver.requests) == 3

    assert alerts.run_alerts(now=NOW + MINUTE) == 1
    [event] = events()
    assert event.delivered_at == NOW + MINUTE and event.attempts == 2
    assert [entry["ok"] for entry in event.delivery_log] == [False, True]
    assert len(receiver.requests) == 4
    assert {b["alert_id"] for b in receiver.bodies()} == {event.pk}


def test_retries_back_off_and_give_up(org: Organization, team: Team) -> None:
    port = WebhookReceiver()  # bound but never serving: every request fails
    port.server.server_close()
    add_channel(org, "webhook", port.url())
    monthly(team, 100)
    spend(team, EARLY_NOVEMBER, 55 * USD)

    now = NOW
    for _ in range(alerts.MAX_ATTEMPTS + 2):
        alerts.run_alerts(now=now)
        now += dt.timedelta(hours=1)

    [event] = events()
    assert event.delivered_at is None
    assert event.attempts == alerts.MAX_ATTEMPTS
    assert len(event.delivery_log) == alerts.MAX_ATTEMPTS


def test_only_the_channel_that_failed_is_retried(
    org: Organization, team: Team, receiver: WebhookReceiver
) -> None:
    other = WebhookReceiver().start()
    try:
        add_channel(org, "webhook", receiver.url(), name="ok")
        add_channel(org, "webhook", other.url(), name="flaky")
        monthly(team, 100)
        spend(team, EARLY_NOVEMBER, 55 * USD)
        other.script(503, 503, 503)

        assert alerts.run_alerts(now=NOW) == 1
        assert events()[0].delivered_at is None
        assert alerts.run_alerts(now=NOW + MINUTE) == 1

        assert len(receiver.requests) == 1
        assert len(other.requests) == 4
        assert events()[0].delivered_at == NOW + MINUTE
    finally:
        other.stop()


def test_slack_and_email_channels_get_the_alert(
    org: Organization, team: Team, receiver: WebhookReceiver, mailoutbox: list[Any]
) -> None:
    add_channel(org, "slack", receiver.url("/services/T0/B0/token"))
    add_channel(org, "email", "finance@example.com")
    monthly(team, 100)
    spend(team, EARLY_NOVEMBER, 55 * USD)

    assert alerts.run_alerts(now=NOW) == 1

    [event] = events()
    [slack] = receiver.bodies()
    assert slack["text"] == event.message
    assert any(b["type"] == "header" for b in slack["blocks"])
    [mail] = mailoutbox
    assert mail.to == ["finance@example.com"]
    assert mail.subject == '[claude-gateway] Team "ml" at 50% of its monthly budget'
    assert event.message in mail.body
    targets = {entry["kind"]: entry["target"] for entry in event.delivery_log}
    assert targets == {"slack": receiver.base_url + "/…", "email": "finance@example.com"}


def test_disabled_channels_and_other_organizations_channels_are_skipped(
    org: Organization, team: Team, receiver: WebhookReceiver
) -> None:
    other_org = factories.organization()
    add_channel(other_org, "webhook", receiver.url(), name="theirs")
    mine = add_channel(org, "webhook", receiver.url(), name="mine")
    mine.enabled = False
    channels.save_channel(mine, actor=factories.TEST_ACTOR)
    monthly(team, 100)
    spend(team, EARLY_NOVEMBER, 55 * USD)

    assert alerts.run_alerts(now=NOW) == 0
    assert receiver.requests == []


def test_alerts_without_a_channel_are_recorded_for_the_admin(org: Organization, team: Team) -> None:
    monthly(team, 100)
    spend(team, EARLY_NOVEMBER, 55 * USD)

    assert alerts.run_alerts(now=NOW) == 0
    assert alerts.run_alerts(now=NOW + MINUTE) == 0

    [event] = events()
    assert event.delivered_at == NOW
    assert event.delivery_log == [
        {"at": NOW.isoformat(), "ok": False, "detail": "no enabled alert channel"}
    ]


def test_an_alert_is_claimed_by_one_worker_at_a_time(org: Organization, team: Team) -> None:
    monthly(team, 100)
    spend(team, EARLY_NOVEMBER, 55 * USD)
    budget = Budget.objects.get()
    [event] = alerts.evaluate_budget(budget, now=NOW)

    assert alerts.claim(event.pk, now=NOW) is True
    assert alerts.claim(event.pk, now=NOW) is False
    assert alerts.claim(event.pk, now=NOW + alerts.CLAIM) is True  # the first worker died


@pytest.mark.django_db(transaction=True)
def test_two_workers_at_once_send_each_alert_once(
    receiver: WebhookReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL: SQLite serializes the two workers anyway")
    org = factories.organization(name="acme", timezone="Europe/Berlin")
    team = factories.team(organization=org, name="ml")
    add_channel(org, "webhook", receiver.url())
    monthly(team, 100)
    spend(team, EARLY_NOVEMBER, 60 * USD)
    spend(team, dt.datetime(2026, 11, 9, 9, 0, tzinfo=dt.UTC), 25 * USD)
    receiver.delay = 0.2  # keep the first delivery in flight while the other worker looks
    start, deliver = threading.Barrier(2), threading.Barrier(2)
    sent: list[int] = []
    deliver_due = alerts.deliver_due

    def deliver_together(*, now: dt.datetime) -> int:
        deliver.wait()  # both workers see the same pending alerts: only the claim decides
        return deliver_due(now=now)

    monkeypatch.setattr(alerts, "deliver_due", deliver_together)

    def worker() -> None:
        try:
            start.wait()
            sent.append(alerts.run_alerts(now=NOW))
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    delivered = events(delivery_log__0__silent__isnull=True)
    assert [(e.kind, e.threshold_percent) for e in events()] == [
        ("forecast", 0),
        ("threshold", 50),
        ("threshold", 80),
    ]
    assert sum(sent) == len(delivered) == 2
    assert sorted(b["alert_id"] for b in receiver.bodies()) == sorted(e.pk for e in delivered)


# --- admin ---------------------------------------------------------------------------------


def test_admin_shows_alerts_and_edits_channels(
    admin_client: Client, org: Organization, team: Team
) -> None:
    monthly(team, 100)
    spend(team, EARLY_NOVEMBER, 55 * USD)
    alerts.run_alerts(now=NOW)
    [event] = events()

    page = admin_client.get("/admin/telemetry/alertevent/")
    assert page.status_code == 200
    assert "acme" in page.content.decode() and "$55.00" in page.content.decode()
    assert admin_client.get(f"/admin/telemetry/alertevent/{event.pk}/change/").status_code == 200

    response = admin_client.post(
        "/admin/telemetry/alertchannel/add/",
        {
            "organization": org.pk,
            "name": "finance",
            "kind": "slack",
            "target": "https://hooks.slack.com/services/T0/B0/secret-token",
            "enabled": "on",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    channel = AlertChannel.objects.get(name="finance")
    assert channel.organization_id == org.pk
    listing = admin_client.get("/admin/telemetry/alertchannel/").content.decode()
    assert "https://hooks.slack.com/…" in listing and "secret-token" not in listing

    duplicate = admin_client.post(
        "/admin/telemetry/alertchannel/add/",
        {"organization": org.pk, "name": "finance", "kind": "email", "target": "a@example.com"},
    )
    assert duplicate.status_code == 200
    assert "already has a channel with this name" in duplicate.content.decode()
