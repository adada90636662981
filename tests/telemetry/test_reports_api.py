"""GET /api/v1/reports/usage and /spend: grouped as asked, equal to the ledger, JSON and CSV,
paged, and scoped to what each role reads (team leads their teams, organization roles their
organizations; naming anything else is a 404)."""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections import defaultdict
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from governance.models import Role
from telemetry import rollups
from telemetry.models import UsageRecord
from tests.telemetry.api_support import World, token_for, world
from tests.telemetry.usage_events import at, event, write

pytestmark = pytest.mark.django_db

USAGE = "/api/v1/reports/usage"
SPEND = "/api/v1/reports/spend"
RANGE = "starting_at=2026-11-01T00:00:00Z&ending_at=2026-11-08T00:00:00Z"


@pytest.fixture
def w() -> World:
    data = world()
    rows = []
    for day in range(4):
        base = at("2026-11-02 09:00") + dt.timedelta(days=day)
        rows += [
            event(base, key=data.backend_key, cost=1_000_001, session_id=f"s-b-{day}"),
            event(
                base, key=data.alice, cost=250_000, served_model="claude-opus-4-1", session_id="s-a"
            ),
            event(base, key=data.ml_key, cost=3_000_000, session_id="s-ml"),
            event(base, key=data.rival_key, cost=7_000_000, session_id="s-r"),
        ]
    write(*rows[:8])
    rollups.run_rollups(settle_seconds=0)
    write(*rows[8:])  # the last two days are not rolled up yet
    return data


def get(path: str, token: str | None = None, **extra: Any) -> Any:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    return Client().get(path, headers={**headers, **extra})


def ledger(group: Any, **filters: Any) -> dict[Any, int]:
    sums: dict[Any, int] = defaultdict(int)
    for row in UsageRecord.objects.filter(**filters):
        sums[group(row)] += row.cost_micros
    return dict(sums)


def test_a_usage_report_by_team_and_model_per_day_equals_the_ledger(w):
    admin = token_for(Role.PLATFORM_ADMIN, w.acme)

    answer = get(f"{USAGE}?{RANGE}&group_by=team,model,day", admin)

    assert answer.status_code == 200
    body = answer.json()
    assert body["columns"] == [
        "bucket_start", "team_id", "team", "model", "requests", "errors", "input_tokens",
        "output_tokens", "cache_read_tokens", "cache_write_tokens", "cost_micros", "cost_usd",
    ]  # fmt: skip
    got = {
        (r["bucket_start"][:10], r["team"], r["model"]): r["cost_micros"] for r in body["results"]
    }
    expected = ledger(
        lambda row: (
            row.created_at.date().isoformat(),
            {w.backend.pk: "backend", w.ml.pk: "ml"}[row.team_id],
            row.served_model,
        ),
        organization_id=w.acme.pk,
    )
    assert got == expected
    first = body["results"][1]  # 2026-11-02, backend, claude-sonnet-4-6 (opus sorts first)
    assert (first["team"], first["model"]) == ("backend", "claude-sonnet-4-6")
    assert first["cost_usd"] == "1.000001" and isinstance(first["cost_micros"], int)
    assert first["input_tokens"] == 100 and first["cache_write_tokens"] == 4


def test_the_spend_report_by_key_names_sub_keys_and_keeps_money_exact(w):
    finance = token_for(Role.FINANCE, w.acme)

    body = get(f"{SPEND}?{RANGE}&group_by=key", finance).json()

    assert body["columns"] == ["key_id", "key", "requests", "cost_micros", "cost_usd"]
    rows = {r["key"]: (r["requests"], r["cost_micros"], r["cost_usd"]) for r in body["results"]}
    assert rows == {
        "vk-backend": (4, 4_000_004, "4.000004"),
        "vk-backend/alice": (4, 1_000_000, "1.000000"),
        "vk-ml": (4, 12_000_000, "12.000000"),
    }


def test_csv_by_format_or_accept_with_a_header_even_when_empty(w):
    admin = token_for(Role.PLATFORM_ADMIN, w.acme)

    by_format = get(f"{SPEND}?{RANGE}&group_by=team&format=csv", admin)
    by_accept = get(f"{SPEND}?{RANGE}&group_by=team", admin, accept="text/csv")
    empty = get(f"{SPEND}?starting_at=2020-01-01&ending_at=2020-01-02&format=csv", admin)

    for answer in (by_format, by_accept):
        assert answer["Content-Type"].startswith("text/csv")
        assert "attachment" in answer["Content-Disposition"]
        table = list(csv.reader(io.StringIO(answer.content.decode())))
        assert table[0] == ["team_id", "team", "requests", "cost_micros", "cost_usd"]
        assert {row[1]: row[4] for row in table[1:]} == {"backend": "5.000004", "ml": "12.000000"}
    assert empty.content.decode().strip() == "requests,cost_micros,cost_usd"
    bad = get(f"{SPEND}?group_by=nope&format=csv", admin)
    assert bad.status_code == 400 and bad["Content-Type"] == "application/json"


def test_pages_follow_next_and_csv_links_it(w):
    admin = token_for(Role.PLATFORM_ADMIN, w.acme)
    url = f"{SPEND}?{RANGE}&group_by=key,day&limit=5"

    first = get(url, admin).json()
    second = get(first["next"], admin).json()
    as_csv = get(url + "&format=csv", admin)

    assert len(first["results"]) == 5 and len(second["results"]) == 5
    whole = get(f"{SPEND}?{RANGE}&group_by=key,day", admin).json()["results"]
    assert (
        first["results"] + second["results"] + get(second["next"], admin).json()["results"] == whole
    )
    assert 'rel="next"' in as_csv["Link"]


def test_sessions_per_day(w):
    admin = token_for(Role.PLATFORM_ADMIN, w.acme)

    body = get(f"{SPEND}?{RANGE}&group_by=session,key,day", admin).json()

    assert body["columns"][:4] == ["bucket_start", "session_id", "key_id", "key"]
    lines = {
        (r["bucket_start"][:10], r["session_id"], r["key"]): r["cost_micros"]
        for r in body["results"]
    }
    assert body["results"][0]["bucket_start"] == "2026-11-02T00:00:00+00:00"  # a UTC day
    assert lines[("2026-11-05", "s-a", "vk-backend/alice")] == 250_000
    assert lines[("2026-11-02", "s-b-0", "vk-backend")] == 1_000_001
    assert len(lines) == 12
    refused = get(f"{SPEND}?{RANGE}&group_by=session,model", admin)
    assert refused.status_code == 400


def test_a_team_lead_reads_only_their_team_and_gets_404_for_others(w):
    lead = token_for(Role.TEAM_LEAD, w.acme, teams=(w.backend,))

    rows = get(f"{SPEND}?{RANGE}&group_by=organization,team", lead).json()["results"]

    assert [(r["organization"], r["team"], r["cost_micros"]) for r in rows] == [
        ("acme", "backend", 5_000_004)
    ]
    assert get(f"{SPEND}?{RANGE}&team={w.ml.pk}", lead).status_code == 404
    assert get(f"{SPEND}?{RANGE}&key={w.ml_key.pk}", lead).status_code == 404
    assert get(f"{SPEND}?{RANGE}&key={w.alice.pk}", lead).status_code == 200
    assert get(f"{SPEND}?{RANGE}&organization={w.globex.pk}", lead).status_code == 404


def test_finance_of_another_organization_sees_none_of_this_one(w):
    finance = token_for(Role.FINANCE, w.globex)

    rows = get(f"{SPEND}?{RANGE}&group_by=organization", finance).json()["results"]

    assert [(r["organization"], r["cost_micros"]) for r in rows] == [("globex", 28_000_000)]
    assert get(f"{SPEND}?{RANGE}&organization={w.acme.pk}", finance).status_code == 404
    assert get(f"{SPEND}?{RANGE}&team={w.backend.pk}", finance).status_code == 404
    assert get(f"{SPEND}?{RANGE}&organization=99999", finance).status_code == 404


def test_who_may_ask(w, client):
    assert get(SPEND).status_code == 401
    assert get(SPEND, "gwapi-not-a-token").status_code == 401
    assert get(SPEND, token_for(None)).status_code == 403  # a token of a user with no role
    staff = get_user_model().objects.create_user("staff", is_staff=True)
    client.force_login(staff)
    assert client.get(SPEND).status_code == 403  # staff without a role
    superuser = get_user_model().objects.create_superuser("root", password=None)
    client.force_login(superuser)
    rows = client.get(f"{SPEND}?{RANGE}&group_by=organization").json()["results"]
    assert {r["organization"] for r in rows} == {"acme", "globex"}


@pytest.mark.parametrize(
    "query",
    [
        "group_by=user",
        "group_by=day,hour",
        "starting_at=yesterday",
        "starting_at=2026-11-05&ending_at=2026-11-01",
        "starting_at=2024-01-01&ending_at=2026-01-01",
        "group_by=hour&starting_at=2026-01-01&ending_at=2026-03-01",
        "tz=Mars/Olympus",
        "team=abc",
        "team=99999999999999999999999",
        "limit=0",
        "cursor=not-a-cursor",
        "model=claude%00",
    ],
)
def test_bad_parameters_are_400s(w, query):
    admin = token_for(Role.PLATFORM_ADMIN, w.acme)

    answer = get(f"{USAGE}?{query}", admin)

    assert answer.status_code == 400
    assert isinstance(answer.json()["detail"], str)  # the documented {"detail": "…"}
