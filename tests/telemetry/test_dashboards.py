"""Dashboards through Django's test client: /logs, its live feed and detail, the spend
dashboard and its CSV exports, and the budget-use columns in the admin."""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from governance.models import Budget, Organization, Project, Team, VirtualKey
from telemetry import periods, rollups
from telemetry.dashboards import charts
from telemetry.dashboards.logfilters import Cursor, page
from telemetry.dashboards.spans import parse_span
from telemetry.dashboards.utilisation import budget_use, with_forecasts
from telemetry.models import BudgetPeriodRecord, UsageRecord
from tests import factories
from tests.telemetry.usage_events import event, write

pytestmark = pytest.mark.django_db

LOGS = "/logs"
SPEND = "/dashboards/spend"


@dataclass
class World:
    org: Organization
    other_org: Organization
    ml: Team
    web: Team
    app: Project
    ml_key: VirtualKey
    web_key: VirtualKey
    sub_key: VirtualKey
    other_key: VirtualKey
    now: dt.datetime


@pytest.fixture
def world(steady_clock: dt.datetime) -> World:
    """Two organizations on a steady clock: spend minutes or days old stays in today's, this
    week's and this month's periods whenever the suite runs."""
    org = factories.organization(name="acme")
    other_org = factories.organization(name="globex")
    ml = factories.team(organization=org, name="ml")
    web = factories.team(organization=org, name="web")
    app = factories.project(organization=org, name="app")
    ml_key = factories.virtual_key(team=ml, name="ml-ci", project=app)
    web_key = factories.virtual_key(team=web, name="web-dev")
    sub_key = factories.virtual_key(parent=ml_key, name="agent")
    other_key = factories.virtual_key(organization=other_org, name="globex-key")
    return World(org, other_org, ml, web, app, ml_key, web_key, sub_key, other_key, timezone.now())


def _ago(world: World, **delta: float) -> dt.datetime:
    return world.now - dt.timedelta(**delta)


def _ids(response: Any) -> list[int]:
    return [int(pk) for pk in re.findall(r'<tr data-id="(\d+)"', response.content.decode())]


def _rows(**filters: Any) -> list[int]:
    return list(
        UsageRecord.objects.filter(**filters)
        .order_by("-created_at", "-id")
        .values_list("id", flat=True)
    )


# --- access ------------------------------------------------------------------------------------

PAGES = [LOGS, f"{LOGS}/live?since=0", f"{LOGS}/req-x", SPEND, f"{SPEND}?format=csv"]


@pytest.mark.parametrize("url", PAGES)
def test_anonymous_visitors_are_sent_to_the_admin_login(client, url):
    response = client.get(url)
    assert response.status_code == 302
    target = urlparse(response["Location"])
    assert target.path == reverse("admin:login")
    assert parse_qs(target.query)["next"] == [url]


def test_users_who_are_not_staff_are_sent_to_the_login_too(client):
    user = get_user_model().objects.create_user("dev", password="pw-not-staff-123")
    client.force_login(user)
    assert client.get(LOGS).status_code == 302
    assert client.get(SPEND).status_code == 302


def test_dashboards_answer_only_get(admin_client):
    assert admin_client.post(LOGS).status_code == 405
    assert admin_client.post(SPEND).status_code == 405


# --- /logs -------------------------------------------------------------------------------------


def test_request_log_lists_newest_first_with_names(admin_client, world):
    write(
        event(_ago(world, minutes=3), key=world.ml_key, request_id="req-old"),
        event(_ago(world, minutes=1), key=world.web_key, request_id="req-new", cost=1_234_567),
    )
    response = admin_client.get(LOGS)
    assert response.status_code == 200
    assert _ids(response) == _rows()
    html = response.content.decode()
    assert html.index("req-new") < html.index("req-old")
    assert "web-dev" in html and "ml-ci" in html and "acme" in html
    assert "$1.234567" in html
    assert response["Cache-Control"].startswith("max-age=0")


def _filter_cases(world: World) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    return [
        ({"organization": world.org.pk}, {"organization_id": world.org.pk}),
        ({"team": world.ml.pk}, {"team_id": world.ml.pk}),
        ({"team": 0}, {"team_id__isnull": True}),
        ({"project": world.app.pk}, {"project_id": world.app.pk}),
        ({"key": world.web_key.pk}, {"key_id": world.web_key.pk}),
        ({"model": "claude-opus-4-1"}, {"served_model": "claude-opus-4-1"}),
        ({"provider": "azure"}, {"provider": "azure"}),
        ({"status": "error"}, {"status__gte": 400}),
        ({"status": "ok"}, {"status__lt": 400}),
        ({"status": "429"}, {"status": 429}),
        ({"session": "sess-1"}, {"session_id": "sess-1"}),
    ]


@pytest.fixture
def mixed_rows(world: World) -> World:
    write(
        event(_ago(world, minutes=1), key=world.ml_key, session_id="sess-1"),
        event(_ago(world, minutes=2), key=world.web_key, served_model="claude-opus-4-1"),
        event(_ago(world, minutes=3), key=world.web_key, status=429, error_type="rate_limit"),
        event(_ago(world, minutes=4), key=world.sub_key, provider="azure", session_id="sess-1"),
        event(_ago(world, minutes=5), key=world.other_key, status=502),
        event(_ago(world, minutes=6), organization_id=world.org.pk, key_id=world.ml_key.pk),
        event(_ago(world, hours=30), key=world.ml_key, request_id="req-yesterday"),
    )
    return world


def test_every_filter_narrows_the_log_to_matching_rows(admin_client, mixed_rows):
    day_ago = mixed_rows.now - dt.timedelta(hours=24)
    for params, expected in _filter_cases(mixed_rows):
        response = admin_client.get(LOGS, params)
        assert response.status_code == 200, params
        wanted = _rows(created_at__gte=day_ago, **expected)
        assert wanted, params  # each case matches something, so the assertion means something
        assert _ids(response) == wanted, params


def test_model_filter_also_finds_refusals_by_the_model_asked_for(admin_client, world):
    write(
        event(
            _ago(world, minutes=1),
            key=world.ml_key,
            status=402,
            served_model="",
            routed_model="",
            requested_model="claude-opus-4-1",
        ),
        event(_ago(world, minutes=2), key=world.ml_key),
    )
    response = admin_client.get(LOGS, {"model": "claude-opus-4-1"})
    assert _ids(response) == _rows(status=402)


def test_time_range_presets_and_explicit_times(admin_client, mixed_rows):
    assert "req-yesterday" not in admin_client.get(LOGS).content.decode()  # default: 24 hours
    assert "req-yesterday" in admin_client.get(LOGS, {"range": "7d"}).content.decode()
    assert "req-yesterday" in admin_client.get(LOGS, {"range": "all"}).content.decode()
    start = (mixed_rows.now - dt.timedelta(hours=31)).strftime("%Y-%m-%dT%H:%M")
    end = (mixed_rows.now - dt.timedelta(hours=29)).strftime("%Y-%m-%dT%H:%M")
    response = admin_client.get(LOGS, {"start": start, "end": end})
    assert _ids(response) == _rows(request_id="req-yesterday")
    assert response.context["live"] is False  # a fixed end in the past: nothing new can come


def test_a_bad_filter_value_is_reported_and_ignored(admin_client, mixed_rows):
    response = admin_client.get(LOGS, {"status": "teapot", "team": "x", "range": "forever"})
    assert response.status_code == 200
    html = response.content.decode()
    assert "status: ok, error or an HTTP status code (ignored)" in html
    assert _ids(response) == _rows(created_at__gte=mixed_rows.now - dt.timedelta(hours=24))


def test_filter_choices_list_teams_and_keys_of_the_chosen_organization(admin_client, world):
    html = admin_client.get(LOGS, {"organization": world.org.pk}).content.decode()
    assert "acme/ml-ci" in html and "acme/ml-ci/agent" in html
    assert "globex/globex-key" not in html
    html = admin_client.get(LOGS, {"key": 987654}).content.decode()
    assert "#987654 (deleted or elsewhere)" in html  # a deleted key's rows stay reachable


def test_keyset_pages_walk_every_row_exactly_once_both_ways(admin_client, world):
    same_moment = _ago(world, minutes=30)
    events = [event(_ago(world, seconds=i * 7), key=world.ml_key) for i in range(70)]
    events += [event(same_moment, key=world.web_key) for _ in range(60)]  # ties on created_at
    write(*events)
    expected = _rows()
    seen, url, pages = [], LOGS, []
    while url:
        response = admin_client.get(url)
        pages.append(_ids(response))
        seen += pages[-1]
        older = response.context["older_url"]
        url = LOGS + older if older else ""
    assert seen == expected
    assert [len(p) for p in pages] == [50, 50, 30]
    # And back up from the last page through the "newer" links.
    back = [pages[-1]]
    url = LOGS + response.context["newer_url"]
    while True:
        response = admin_client.get(url)
        back.insert(0, _ids(response))
        newer = response.context["newer_url"]
        if not newer:
            break
        url = LOGS + newer
    assert back == pages


def test_log_pages_never_count_the_table_or_skip_with_offset(admin_client, world):
    write(*[event(_ago(world, seconds=i), key=world.ml_key) for i in range(120)])
    first = admin_client.get(LOGS)
    with CaptureQueriesContext(connection) as queries:
        admin_client.get(LOGS + first.context["older_url"])
    ledger_sql = [q["sql"] for q in queries if "telemetry_usagerecord" in q["sql"]]
    assert ledger_sql
    for sql in ledger_sql:
        assert "COUNT(" not in sql.upper()
        assert "OFFSET" not in sql.upper()


def test_names_cost_the_same_queries_for_one_key_or_fifty(admin_client, world):
    write(event(_ago(world, seconds=1), key=world.ml_key))
    with CaptureQueriesContext(connection) as one:
        admin_client.get(LOGS)
    keys = [factories.virtual_key(organization=world.org, name=f"k{i}") for i in range(49)]
    write(*[event(_ago(world, seconds=2 + i), key=key) for i, key in enumerate(keys)])
    with CaptureQueriesContext(connection) as many:
        response = admin_client.get(LOGS)
    assert len(_ids(response)) == 50
    assert len(many) == len(one)


def test_cursor_tokens_round_trip_and_bad_ones_are_ignored():
    moment = dt.datetime(2026, 11, 26, 14, 3, 22, 123456, tzinfo=dt.UTC)
    assert Cursor.parse(Cursor(moment, 42).token()) == Cursor(moment, 42)
    for bad in ("", "abc", "1.x", "99999999999999999999999999.1"):
        assert Cursor.parse(bad) is None


def test_a_bad_cursor_shows_the_newest_page(admin_client, world):
    write(event(_ago(world, seconds=1), key=world.ml_key))
    assert _ids(admin_client.get(LOGS, {"before": "nonsense"})) == _rows()


def test_page_helper_ends_cleanly_on_an_empty_table():
    result = page(UsageRecord.objects.all())
    assert (result.rows, result.older, result.newer) == ([], None, None)


# --- the live feed -----------------------------------------------------------------------------


def test_live_feed_returns_rows_written_since_the_page(admin_client, world):
    write(event(_ago(world, minutes=1), key=world.ml_key))
    page_response = admin_client.get(LOGS)
    assert page_response.context["live"] is True
    since = page_response.context["since"]
    assert admin_client.get(f"{LOGS}/live", {"since": since}).json()["count"] == 0
    # A long request that started earlier but was written later still shows up.
    write(
        event(_ago(world, minutes=5), key=world.web_key, request_id="req-late"),
        event(_ago(world, seconds=1), key=world.ml_key, request_id="req-fresh"),
    )
    data = admin_client.get(f"{LOGS}/live", {"since": since}).json()
    assert data["count"] == 2
    assert data["since"] == max(_rows())
    assert data["html"].index("req-fresh") < data["html"].index("req-late")
    assert 'class="fresh"' in data["html"]
    assert admin_client.get(f"{LOGS}/live", {"since": data["since"]}).json()["count"] == 0


def test_live_feed_keeps_the_filters_and_still_moves_its_cursor(admin_client, world):
    since = admin_client.get(LOGS, {"team": world.ml.pk}).context["since"]
    write(event(_ago(world, seconds=2), key=world.web_key))
    data = admin_client.get(f"{LOGS}/live", {"since": since, "team": world.ml.pk}).json()
    assert data["count"] == 0
    assert data["since"] == max(_rows())  # the other team's row is not scanned again
    write(event(_ago(world, seconds=1), key=world.ml_key, request_id="req-ml"))
    data = admin_client.get(f"{LOGS}/live", {"since": data["since"], "team": world.ml.pk}).json()
    assert data["count"] == 1 and "req-ml" in data["html"]


def test_live_feed_caps_a_burst_and_says_so(admin_client, world):
    write(*[event(_ago(world, seconds=i), key=world.ml_key) for i in range(105)])
    data = admin_client.get(f"{LOGS}/live", {"since": 0}).json()
    assert data["count"] == 100 and data["truncated"] is True


def test_older_pages_are_not_live(admin_client, world):
    write(*[event(_ago(world, seconds=i), key=world.ml_key) for i in range(60)])
    first = admin_client.get(LOGS)
    assert 'data-live="1"' in first.content.decode()
    second = admin_client.get(LOGS + first.context["older_url"])
    assert second.context["live"] is False
    assert 'data-live="0"' in second.content.decode()


def test_the_page_loads_its_script_and_styles_from_static(admin_client):
    html = admin_client.get(LOGS).content.decode()
    assert '<script src="/static/telemetry/logs.js" defer></script>' in html
    assert "/static/telemetry/dashboards.css" in html
    assert "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "https://" not in html


# --- detail ------------------------------------------------------------------------------------


def test_request_detail_shows_figures_and_attribution(admin_client, world):
    write(
        event(
            _ago(world, minutes=1),
            key=world.sub_key,
            request_id="req-detail",
            cost=12_345,
            input_tokens=1200,
            output_tokens=340,
            cache_read_tokens=5000,
            cache_write_5m_tokens=700,
            cache_write_1h_tokens=60,
            latency_ms=2345,
            ttfb_ms=412,
            attempts=2,
            downgraded_from="claude-opus-4-1",
            session_id="sess-42",
            agent_id="agent-7",
            parent_agent_id="agent-1",
            client_name="claude-code",
            client_version="2.0.14",
            stream=True,
        )
    )
    response = admin_client.get(f"{LOGS}/req-detail")
    assert response.status_code == 200
    html = response.content.decode()
    for text in (
        "$0.012345",
        "1,200",
        "340",
        "5,000",
        "700",
        "60",
        "7,300",  # total tokens
        "2,345 ms",
        "412 ms",
        "2 (failed over)",
        "claude-opus-4-1",
        "sess-42",
        "agent-7",
        "agent-1",
        "claude-code 2.0.14",
        "ml-ci/agent",
        "(sub-key of ml-ci)",
        "acme",
        "ml",
        "app",
    ):
        assert text in html, text
    assert "not part of the request log" in html


def test_unknown_request_is_404(admin_client):
    assert admin_client.get(f"{LOGS}/req-missing").status_code == 404


def test_rows_of_a_deleted_key_show_the_name_they_were_written_with(admin_client, world):
    write(
        event(_ago(world, minutes=1), organization_id=world.org.pk, key_id=999_999, key_name="gone")
    )
    assert "gone" in admin_client.get(LOGS).content.decode()


# --- spend dashboard ---------------------------------------------------------------------------


def _spend_rows(world: World) -> None:
    """Three days of spend for acme (two teams, two models) and some for globex."""
    events = []
    for day in range(3):
        base = world.now - dt.timedelta(days=day, minutes=10)
        events += [
            event(base, key=world.ml_key, cost=2_000_000, session_id="sess-big"),
            event(base, key=world.ml_key, cost=1_000_000, served_model="claude-opus-4-1"),
            event(base, key=world.web_key, cost=500_000, session_id="sess-small"),
            event(base, key=world.other_key, cost=9_000_000),
        ]
    write(*events)


def test_spend_dashboard_shows_charts_totals_and_leaders(admin_client, world):
    _spend_rows(world)
    rollups.run_rollups(settle_seconds=0)
    response = admin_client.get(SPEND, {"org": world.org.pk, "range": "7d"})
    assert response.status_code == 200
    html = response.content.decode()
    assert html.count('<svg class="chart"') == 3
    assert "$10.50" in html  # 3 days x $3.50, globex left out
    assert response.context["overall"].requests == 9
    legend = {item.label: item.total for item in response.context["charts"][0]["chart"].legend}
    assert legend == {"ml": "$9.00", "web": "$1.50"}
    models = {item.label for item in response.context["charts"][1]["chart"].legend}
    assert models == {"claude-sonnet-4-6", "claude-opus-4-1"}
    assert [k["name"] for k in response.context["keys"]] == ["ml-ci", "web-dev"]
    assert [s["session"].session_id for s in response.context["sessions"]] == [
        "sess-big",
        "sess-small",
    ]
    assert "<title>" in html and "ml: $3.00" in html  # tooltips on bar segments


def test_spend_dashboard_reads_the_hour_cells_once_for_all_charts(admin_client, world):
    """In a zone other than UTC a month of local days is read as day cells plus the hours
    around local midnights, once for the three charts (not once per chart)."""
    Organization.objects.filter(pk=world.org.pk).update(timezone="America/New_York")
    _spend_rows(world)
    rollups.run_rollups(settle_seconds=0)
    with CaptureQueriesContext(connection) as queries:
        response = admin_client.get(SPEND, {"org": world.org.pk, "range": "30d"})
    assert response.context["overall"].requests == 9
    hour_reads = [
        q["sql"] for q in queries if "telemetry_spendrollup" in q["sql"] and "'hour'" in q["sql"]
    ]
    # The charts, the top keys' partial days at the ends, the budgets' last 7 days.
    assert len(hour_reads) <= 3


def test_spend_dashboard_counts_rows_not_rolled_up_yet(admin_client, world):
    _spend_rows(world)
    rollups.run_rollups(settle_seconds=0)
    write(event(world.now - dt.timedelta(minutes=1), key=world.web_key, cost=250_000))
    response = admin_client.get(SPEND, {"org": world.org.pk, "range": "7d"})
    assert response.context["overall_cost"] == "$10.75"


def test_spend_dashboard_defaults_to_the_first_organization_and_30_days(admin_client, world):
    response = admin_client.get(SPEND)
    assert response.context["org"] == world.org
    assert response.context["span"].preset == "30d"
    assert "No spend in this range." in response.content.decode()


def test_spend_dashboard_without_organizations(admin_client):
    response = admin_client.get(SPEND)
    assert response.status_code == 200
    assert "No organizations yet" in response.content.decode()


@pytest.mark.parametrize("preset", ["24h", "7d", "30d", "month", "last-month", "90d"])
def test_every_time_range_renders(admin_client, world, preset):
    _spend_rows(world)
    response = admin_client.get(SPEND, {"org": world.org.pk, "range": preset})
    assert response.status_code == 200
    assert response.context["span"].preset == preset


def test_spans_in_the_organization_time_zone():
    now = dt.datetime(2026, 11, 26, 23, 30, tzinfo=dt.UTC)  # Nov 27, 08:30 in Tokyo
    span = parse_span({"range": "7d"}, "Asia/Tokyo", now)
    assert span.start.isoformat() == "2026-11-21T00:00:00+09:00"
    assert span.granularity == "day" and len(span.buckets()) == 7
    span = parse_span({"range": "24h"}, "UTC", now)
    assert span.granularity == "hour" and len(span.buckets()) == 24
    span = parse_span({"range": "last-month"}, "UTC", now)
    assert (span.start.day, span.start.month, span.end.month) == (1, 10, 11)
    span = parse_span({"from": "2026-11-20", "to": "2026-11-10"}, "UTC", now)  # swapped
    assert (span.first_day.day, span.last_day.day, span.preset) == (10, 20, "custom")
    assert parse_span({"from": "not-a-date", "range": "bogus"}, "UTC", now).preset == "30d"


def test_custom_range_from_the_date_inputs(admin_client, world):
    _spend_rows(world)
    today = world.now.date()
    response = admin_client.get(
        SPEND, {"org": world.org.pk, "from": today.isoformat(), "to": today.isoformat()}
    )
    assert response.context["span"].granularity == "hour"
    assert response.context["overall_cost"] == "$3.50"


# --- CSV ---------------------------------------------------------------------------------------


def _csv(response: Any) -> list[dict[str, str]]:
    assert response["Content-Type"].startswith("text/csv")
    assert response["Content-Disposition"].startswith("attachment;")
    return list(csv.DictReader(io.StringIO(response.content.decode())))


def test_csv_of_spend_by_team_has_exact_amounts_per_day(admin_client, world):
    _spend_rows(world)
    rollups.run_rollups(settle_seconds=0)
    response = admin_client.get(
        SPEND, {"org": world.org.pk, "range": "7d", "format": "csv", "export": "team"}
    )
    rows = _csv(response)
    assert {row["team"] for row in rows} == {"ml", "web"}
    ml = [row for row in rows if row["team"] == "ml"]
    assert len(ml) == 3
    assert {row["cost_usd"] for row in ml} == {"3.000000"}
    assert {row["requests"] for row in ml} == {"2"}
    assert {row["team_id"] for row in ml} == {str(world.ml.pk)}
    assert sum(int(row["input_tokens"]) for row in rows) == 9 * 100


@pytest.mark.parametrize("export", ["model", "project"])
def test_csv_of_spend_by_model_and_project(admin_client, world, export):
    _spend_rows(world)
    rows = _csv(
        admin_client.get(
            SPEND, {"org": world.org.pk, "range": "7d", "format": "csv", "export": export}
        )
    )
    groups = {row[export] for row in rows}
    expected = (
        {"claude-sonnet-4-6", "claude-opus-4-1"} if export == "model" else {"app", "no project"}
    )
    assert groups == expected
    assert sum(Decimal(row["cost_usd"]) for row in rows) == Decimal("10.5")


def test_csv_of_top_keys_and_sessions(admin_client, world):
    _spend_rows(world)
    rollups.run_rollups(settle_seconds=0)
    params = {"org": world.org.pk, "range": "7d", "format": "csv"}
    keys = _csv(admin_client.get(SPEND, {**params, "export": "keys"}))
    assert [(r["rank"], r["key"], r["cost_usd"], r["requests"]) for r in keys] == [
        ("1", "ml-ci", "9.000000", "6"),
        ("2", "web-dev", "1.500000", "3"),
    ]
    sessions = _csv(admin_client.get(SPEND, {**params, "export": "sessions"}))
    assert [(r["session_id"], r["key"], r["team"], r["cost_usd"]) for r in sessions] == [
        ("sess-big", "ml-ci", "ml", "6.000000"),
        ("sess-small", "web-dev", "web", "1.500000"),
    ]


def test_csv_of_budgets(admin_client, world):
    factories.budget(owner=world.ml, amount_micros=20_000_000, period="month")
    write(event(world.now - dt.timedelta(minutes=5), key=world.ml_key, cost=5_000_000))
    rows = _csv(
        admin_client.get(SPEND, {"org": world.org.pk, "format": "csv", "export": "budgets"})
    )
    assert len(rows) == 1
    row = rows[0]
    assert (row["scope"], row["owner"], row["spent_usd"], row["limit_usd"]) == (
        "team",
        "team ml",
        "5.000000",
        "20.000000",
    )
    assert row["percent_used"] == "25"


def test_csv_cells_cannot_run_as_spreadsheet_formulas(admin_client, world):
    evil = factories.virtual_key(organization=world.org, name="=HYPERLINK(1)")
    write(event(world.now - dt.timedelta(minutes=5), key=evil, cost=1_000))
    rows = _csv(admin_client.get(SPEND, {"org": world.org.pk, "format": "csv", "export": "keys"}))
    assert rows[0]["key"] == "'=HYPERLINK(1)"


def test_unknown_export_falls_back_to_teams(admin_client, world):
    rows = admin_client.get(SPEND, {"format": "csv", "export": "passwords"})
    assert rows.content.decode().startswith("bucket_start,team,team_id,cost_usd")


# --- budget use --------------------------------------------------------------------------------


def _budgets(world: World) -> dict[str, Budget]:
    return {
        "org": factories.budget(owner=world.org, amount_micros=100_000_000),
        "team": factories.budget(owner=world.ml, amount_micros=10_000_000),
        "key": factories.budget(owner=world.ml_key, amount_micros=4_000_000),
        "opus": factories.budget(
            owner=world.org, amount_micros=50_000_000, model_patterns=["claude-opus-*"]
        ),
    }


def _use(budgets: dict[str, Budget]) -> dict[str, Any]:
    loaded = list(
        Budget.objects.select_related("organization").filter(
            pk__in=[b.pk for b in budgets.values()]
        )
    )
    uses = budget_use(loaded)
    return {name: uses[b.pk] for name, b in budgets.items()}


def test_budget_use_from_the_ledger_covers_sub_keys_and_model_tiers(world):
    budgets = _budgets(world)
    write(
        event(world.now - dt.timedelta(minutes=5), key=world.ml_key, cost=1_000_000),
        event(world.now - dt.timedelta(minutes=4), key=world.sub_key, cost=2_000_000),
        event(
            world.now - dt.timedelta(minutes=3),
            key=world.web_key,
            cost=3_000_000,
            routed_model="claude-opus-4-1",
        ),
    )
    rollups.run_rollups(settle_seconds=0)
    write(event(world.now - dt.timedelta(minutes=1), key=world.sub_key, cost=500_000))
    use = _use(budgets)
    assert {name: u.source for name, u in use.items()} == {
        "org": "rollups",
        "team": "rollups",
        "key": "rollups",
        "opus": "ledger",  # a model tier matches the routed model, which rollups do not keep
    }
    for u in use.values():
        assert u.spent_micros == budget_spend_from_ledger(u.budget)
    assert use["org"].spent_micros == 6_500_000
    assert use["team"].spent_micros == 3_500_000  # the sub-key is in the ml team too
    assert use["key"].spent_micros == 3_500_000  # a key's budget covers its sub-keys
    assert use["opus"].spent_micros == 3_000_000
    assert (use["key"].percent, use["key"].level) == (87, "warn")
    assert use["team"].record_at is None


def budget_spend_from_ledger(budget: Budget) -> int:
    return periods.budget_spend(budget, *_window(budget))


def _window(budget: Budget) -> tuple[dt.datetime | None, dt.datetime | None]:
    window = periods.current_window(budget, timezone.now())
    return window.start, window.end


def test_budget_use_adds_the_ledger_since_the_period_record(world):
    budget = factories.budget(owner=world.ml, amount_micros=10_000_000)
    write(event(world.now - dt.timedelta(minutes=30), key=world.ml_key, cost=1_000_000))
    periods.sync_budget_periods(budget_ids=[budget.pk])
    record = BudgetPeriodRecord.objects.get(budget_id=budget.pk)
    assert record.spent_micros == 1_000_000
    # Rows after the record are added; rows before it are the record's (tampered to prove it).
    BudgetPeriodRecord.objects.filter(pk=record.pk).update(spent_micros=7_000_000)
    write(event(timezone.now() + dt.timedelta(seconds=1), key=world.ml_key, cost=1_500_000))
    use = _use({"team": budget})["team"]
    assert use.spent_micros == 8_500_000
    assert use.source == "record" and use.record_at is not None
    assert (use.percent, use.level) == (85, "warn")


def test_forecast_uses_the_last_seven_days_of_rollups(world):
    budget = factories.budget(owner=world.ml, amount_micros=1_000_000_000, period="lifetime")
    # $70 over the last 7 days = $10/day; $70 spent of $1,000 leaves 93 days.
    write(
        *[
            event(world.now - dt.timedelta(days=d, hours=2), key=world.ml_key, cost=10_000_000)
            for d in range(7)
        ]
    )
    rollups.run_rollups(settle_seconds=0)
    loaded = list(Budget.objects.select_related("organization").filter(pk=budget.pk))
    result = with_forecasts(budget_use(loaded))[budget.pk]
    assert result.recent_micros == 70_000_000
    assert result.daily_rate_micros == 10_000_000
    assert result.exhaustion_at is not None
    days_left = (result.exhaustion_at - result.measured_at).total_seconds() / 86400
    assert round(days_left) == 93


def test_no_forecast_when_the_rate_lasts_past_the_period(world):
    budget = factories.budget(owner=world.ml, amount_micros=10_000_000_000, period="day")
    write(event(world.now - dt.timedelta(days=2), key=world.ml_key, cost=1_000))
    rollups.run_rollups(settle_seconds=0)
    loaded = list(Budget.objects.select_related("organization").filter(pk=budget.pk))
    result = with_forecasts(budget_use(loaded))[budget.pk]
    assert result.exhaustion_at is None
    assert result.projected_micros is not None


@pytest.mark.parametrize("rolled_up", [False, True])
def test_forecast_counts_spend_in_the_current_hour(world, rolled_up):
    now = dt.datetime(2026, 11, 10, 9, 20, tzinfo=dt.UTC)
    budget = factories.budget(owner=world.ml, amount_micros=10_000_000, period="month")
    write(
        event(now - dt.timedelta(days=8), key=world.ml_key, cost=2_000_000),  # before the week
        event(now - dt.timedelta(minutes=5), key=world.ml_key, cost=7_000_000),  # this hour
    )
    if rolled_up:
        rollups.run_rollups(settle_seconds=0)
    loaded = list(Budget.objects.select_related("organization").filter(pk=budget.pk))
    result = with_forecasts(budget_use(loaded, now=now))[budget.pk]
    assert result.spent_micros == 9_000_000
    # $7 this week is $1/day: the $1 left runs out in a day, well before December.
    assert (result.recent_micros, result.daily_rate_micros) == (7_000_000, 1_000_000)
    assert result.exhaustion_at == now + dt.timedelta(days=1)


def test_spend_dashboard_forecasts_a_budget_that_spent_only_minutes_ago(admin_client, world):
    factories.budget(owner=world.ml, amount_micros=100_000_000, period="month")
    write(event(timezone.now(), key=world.ml_key, cost=7_000_000))
    response = admin_client.get(SPEND, {"org": world.org.pk})
    [line] = response.context["budgets"]
    assert line.use.recent_micros == 7_000_000
    assert line.forecast != "no spend in the last 7 days"
    assert line.forecast.startswith(("on track", "runs out"))


def test_forecasts_read_the_ledger_once_for_any_number_of_budgets(world):
    def ledger_reads(count: int) -> int:
        for n in range(count):
            factories.budget(owner=world.web, amount_micros=(n + 1) * 1_000_000)
        loaded = list(Budget.objects.select_related("organization"))
        uses = budget_use(loaded)
        with CaptureQueriesContext(connection) as queries:
            with_forecasts(uses)
        return sum("telemetry_usagerecord" in q["sql"] for q in queries)

    write(event(world.now - dt.timedelta(minutes=5), key=world.web_key, cost=1_000_000))
    assert ledger_reads(1) == ledger_reads(10) == 1  # the rows not rolled up yet, for all


def test_a_tiny_rate_against_a_large_budget_has_no_exhaustion_date(world):
    budget = factories.budget(owner=world.ml, amount_micros=20_000_000_000, period="lifetime")
    write(event(world.now - dt.timedelta(hours=3), key=world.ml_key, cost=1))
    loaded = list(Budget.objects.select_related("organization").filter(pk=budget.pk))
    result = with_forecasts(budget_use(loaded))[budget.pk]
    assert result.recent_micros == 1
    assert result.exhaustion_at is None


def test_spend_dashboard_lists_budgets_with_bars_and_forecasts(admin_client, world):
    factories.budget(owner=world.ml, amount_micros=5_000_000, period="month")
    write(event(world.now - dt.timedelta(minutes=5), key=world.ml_key, cost=6_000_000))
    response = admin_client.get(SPEND, {"org": world.org.pk})
    line = response.context["budgets"][0]
    assert (line.owner, line.spent, line.limit, line.forecast) == (
        "team ml",
        "$6.00",
        "$5.00",
        "exhausted",
    )
    assert 'style="width: 100%"' in response.content.decode()
    assert line.use.percent == 120 and line.use.level == "over"


# --- charts ------------------------------------------------------------------------------------


def test_chart_keeps_the_biggest_groups_and_merges_the_rest():
    groups = {f"g{i}": [i * 1_000_000, 0] for i in range(1, 12)}
    series = charts.top_series(groups, 2)
    assert len(series) == charts.MAX_GROUPS
    assert series[0].label == "g11"
    assert series[-1].label == "other (4)"
    assert series[-1].values == [(1 + 2 + 3 + 4) * 1_000_000, 0]


def test_chart_axis_steps_are_round_numbers():
    assert charts.nice_step(10_000) == 5_000
    assert charts.nice_step(9_000_000) == 5_000_000
    assert charts.nice_step(123_000_000) == 50_000_000
    assert charts.axis_label(50_000_000) == "$50"
    assert charts.axis_label(25_000_000_000) == "$25k"
    assert charts.axis_label(5_000) == "$0.005"


# --- admin columns -----------------------------------------------------------------------------


def test_admin_lists_show_budget_use_bars(admin_client, world):
    budgets = _budgets(world)
    write(event(world.now - dt.timedelta(minutes=5), key=world.ml_key, cost=3_000_000))
    html = admin_client.get(reverse("admin:governance_budget_changelist")).content.decode()
    assert "$3.00 / $4.00 · <strong>75%</strong>" in html
    assert "$3.00 / $10.00 · <strong>30%</strong>" in html
    team_html = admin_client.get(reverse("admin:governance_team_changelist")).content.decode()
    assert "$3.00 / $10.00 · <strong>30%</strong>" in team_html
    assert "no budget" in team_html  # the web team
    key_html = admin_client.get(reverse("admin:governance_virtualkey_changelist")).content.decode()
    assert "$3.00 / $4.00 · <strong>75%</strong>" in key_html
    assert budgets


def _ledger_queries(admin_client) -> int:
    with CaptureQueriesContext(connection) as queries:
        admin_client.get(reverse("admin:governance_budget_changelist"))
    return sum("telemetry_usagerecord" in q["sql"] for q in queries)


def test_admin_budget_list_costs_one_aggregate_per_budget(admin_client, world):
    budgets = [factories.budget(owner=world.ml, amount_micros=n * 1_000_000) for n in (1, 2, 3)]
    periods.sync_budget_periods(budget_ids=[b.pk for b in budgets])
    assert _ledger_queries(admin_client) == 3  # the rows since each budget's period record
    more = [factories.budget(owner=world.web, amount_micros=n * 1_000_000) for n in range(1, 11)]
    periods.sync_budget_periods(budget_ids=[b.pk for b in more])
    assert _ledger_queries(admin_client) == 13


def test_budgets_without_a_period_record_share_one_rollup_read(admin_client, world):
    for n in (1, 2, 3):
        factories.budget(owner=world.ml, amount_micros=n * 1_000_000)
    few = _ledger_queries(admin_client)
    for n in range(1, 11):
        factories.budget(owner=world.web, amount_micros=n * 1_000_000)
    assert _ledger_queries(admin_client) == few == 1  # one read of the rows not rolled up


def test_admin_period_history_shows_spent_against_limit(admin_client, world):
    budget = factories.budget(owner=world.ml, amount_micros=10_000_000)
    write(event(world.now - dt.timedelta(minutes=5), key=world.ml_key, cost=9_000_000))
    periods.sync_budget_periods(budget_ids=[budget.pk])
    url = reverse("admin:telemetry_budgetperiodrecord_changelist")
    html = admin_client.get(url).content.decode()
    assert "$9.00 / $10.00 · <strong>90%</strong>" in html
    assert f"budget #{budget.pk}" in html
    record = BudgetPeriodRecord.objects.get(budget_id=budget.pk)
    change = reverse("admin:telemetry_budgetperiodrecord_change", args=[record.pk])
    assert admin_client.post(change, {"spent_micros": 0}).status_code == 403
