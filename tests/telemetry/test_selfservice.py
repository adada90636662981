"""Developer self-service: GET /api/v1/me and /api/v1/me/statusline authenticated by the
virtual key itself, and the /me page. A key sees its own budgets and every ceiling above it,
never another key's or another team's figures."""

from __future__ import annotations

import datetime as dt
import json
import zoneinfo
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from governance.services import keys
from telemetry import rollups
from tests import factories
from tests.telemetry.api_support import World, world
from tests.telemetry.usage_events import event, write

pytestmark = pytest.mark.django_db

ME = "/api/v1/me"
STATUSLINE = "/api/v1/me/statusline"


@pytest.fixture
def w(steady_clock: dt.datetime) -> World:
    """Spend minutes old counts against today's, this week's and this month's budgets."""
    data = world()
    factories.budget(owner=data.acme, amount_micros=1_000_000_000)  # $1,000 a month
    factories.budget(owner=data.backend, amount_micros=200_000_000)  # $200 a month
    factories.budget(owner=data.backend, amount_micros=50_000_000, model_patterns=["claude-opus-*"])
    factories.budget(owner=data.backend_key, amount_micros=150_000_000, period="week")
    factories.budget(owner=data.alice, amount_micros=100_000_000, period="day")
    factories.budget(owner=data.ml, amount_micros=999_000_000)  # another team's
    factories.rate_limit(owner=data.backend_key, requests_per_minute=120)
    factories.model_policy(owner=data.backend, allowed_patterns=["claude-*"])
    now = timezone.now()
    write(
        event(now - dt.timedelta(minutes=3), key=data.alice, cost=26_000_000, session_id="alice-1"),
        event(
            now - dt.timedelta(minutes=2),
            key=data.backend_key,
            cost=100_000_000,
            session_id="ops-secret-session",
        ),
        event(now - dt.timedelta(minutes=1), key=data.ml_key, cost=77_000_000, session_id="ml-1"),
    )
    rollups.run_rollups(settle_seconds=0)
    return data


def me(secret: str | None, path: str = ME, header: str = "x-api-key") -> Any:
    headers = {}
    if secret is not None:
        headers[header] = secret if header == "x-api-key" else f"Bearer {secret}"
    return Client().get(path, headers=headers)


def test_a_sub_key_sees_every_ceiling_above_it_with_spend_and_reset(w):
    answer = me(w.alice_secret)

    assert answer.status_code == 200 and answer["Cache-Control"] == "no-store"
    body = answer.json()
    assert body["key"]["name"] == "alice" and body["key"]["parent"] == "vk-backend"
    lines = [(b["level"], b["owner"], b["period"], b["models"]) for b in body["budgets"]]
    assert lines == [
        ("key", "alice", "day", []),
        ("parent key", "vk-backend", "week", []),
        ("team", "backend", "month", []),
        ("team", "backend", "month", ["claude-opus-*"]),
        ("organization", "acme", "month", []),
    ]
    team = body["budgets"][2]
    assert (team["spent_micros"], team["limit_micros"], team["remaining_micros"]) == (
        126_000_000,
        200_000_000,
        74_000_000,
    )
    assert team["spent_usd"] == "126.000000" and team["percent_used"] == 63
    assert team["resets_at"] is not None and team["forecast"]["daily_rate_micros"] == 18_000_000
    assert body["budgets"][0]["spent_micros"] == 26_000_000  # alice's own day
    assert body["rate_limits"] == [
        {
            "level": "parent key",
            "owner": "vk-backend",
            "requests_per_minute": 120,
            "tokens_per_minute": None,
            "concurrent": None,
        }
    ]
    assert body["models"]["rules"][0]["allow"] == ["claude-*"]


def test_usage_and_sessions_are_the_key_s_own_only(w):
    body = me(w.alice_secret).json()

    usage = body["usage"]
    assert [row["cost_micros"] for row in usage["by_day"]] == [26_000_000]
    assert [(row["model"], row["requests"]) for row in usage["by_model"]] == [
        ("claude-sonnet-4-6", 1)
    ]
    assert [row["session_id"] for row in usage["sessions"]] == ["alice-1"]
    text = json.dumps(body)
    # Neither the parent's own sessions and spend, nor another team's budget or key.
    assert "ops-secret-session" not in text and "ml-1" not in text
    assert "vk-ml" not in text and "999000000" not in text and '"ml"' not in text


def test_bearer_works_and_bad_keys_are_401(w):
    assert me(w.ml_secret, header="authorization").status_code == 200
    assert me(None).status_code == 401
    assert me("sk-gw-not-a-key").status_code == 401
    keys.revoke_key(actor=factories.TEST_ACTOR, key=w.ml_key)
    revoked = me(w.ml_secret)
    assert revoked.status_code == 401 and w.ml_secret not in revoked.content.decode()
    assert me(w.ml_secret, path=STATUSLINE).status_code == 401


def test_an_expired_key_is_401(w):
    issued = factories.issued_key(
        team=w.ml, name="old", expires_at=timezone.now() - dt.timedelta(seconds=1)
    )

    assert me(issued.secret).status_code == 401


def test_repeated_failures_from_one_address_are_throttled(w, settings):
    settings.GATEWAY_AUTH_FAILURES_PER_MINUTE = 3
    for _ in range(3):
        assert me("sk-gw-wrong").status_code == 401

    assert me("sk-gw-wrong").status_code == 429
    assert me(w.ml_secret).status_code == 429  # before any lookup, good keys included


def test_the_statusline_names_the_fullest_budget_and_its_reset(w):
    answer = me(w.backend_secret, path=STATUSLINE)

    assert answer["Content-Type"].startswith("text/plain")
    # The key's weekly $150 is 84 % used ($126 of the key and its sub-key) and is the fullest.
    today = timezone.now().astimezone(zoneinfo.ZoneInfo(w.acme.timezone)).date()
    monday = today + dt.timedelta(days=7 - today.weekday())
    expected = f"key budget 84 % used, resets {monday:%b} {monday.day}\n"
    assert answer.content.decode() == expected


def test_the_statusline_of_a_team_budget(w):
    issued = factories.issued_key(team=w.backend, name="carol")

    line = me(issued.secret, path=STATUSLINE, header="authorization").content.decode()

    now = timezone.now()
    first = (now.replace(day=1) + dt.timedelta(days=32)).replace(day=1)
    assert line == f"team budget 63 % used, resets {first:%b} {first.day}\n"


def test_a_key_without_budgets_says_so(w):
    assert me(w.ml_secret, path=STATUSLINE).content.decode() != ""
    lone = factories.issued_key(organization=factories.organization(name="solo"), name="k")
    assert me(lone.secret, path=STATUSLINE).content.decode() == "no budget limits\n"


def test_the_page_takes_the_key_in_a_posted_form_never_in_the_url(w):
    client = Client(enforce_csrf_checks=True)
    form = client.get("/me")
    assert form.status_code == 200 and b'method="post"' in form.content
    token = form.cookies["csrftoken"].value

    shown = client.post("/me", {"key": w.alice_secret, "csrfmiddlewaretoken": token})

    page = shown.content.decode()
    assert shown.status_code == 200 and shown["Cache-Control"] == "no-store"
    assert "My budget · alice" in page and "parent key budget 84 % used" in page
    assert w.alice_secret not in page and "ops-secret-session" not in page
    refused = client.post("/me", {"key": "sk-gw-nope", "csrfmiddlewaretoken": token})
    assert refused.status_code == 401 and "unknown, revoked or expired" in refused.content.decode()
    assert client.post("/me", {"key": w.alice_secret}).status_code == 403  # no CSRF token
