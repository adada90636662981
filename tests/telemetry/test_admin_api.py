"""The Anthropic-compatible Admin API: spend limits over budgets, the messages usage report and
the cost report, replaying the request and response shapes of shared/CLAUDE-GATEWAY.md §3 and
§7 (Part 2), with the Django test client. test_admin_api_sdk.py drives a live gateway with
Anthropic's own SDK."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from governance.models import AuditEvent, Budget, Role
from governance.services import tokens
from telemetry import rollups
from tests import factories
from tests.telemetry.api_support import World, token_for, world
from tests.telemetry.usage_events import at, event, write

pytestmark = pytest.mark.django_db

LIMITS = "/v1/organizations/spend_limits"
REQUEST_ID = re.compile(r"^req_[0-9a-f]{32}$")


@pytest.fixture
def w() -> World:
    return world()


@pytest.fixture
def admin(w: World) -> str:
    return token_for(Role.PLATFORM_ADMIN, w.acme)


def call(method: str, path: str, token: str | None, body: Any = None, **headers: str) -> Any:
    client = Client()
    sent = {**({"x-api-key": token} if token else {}), **headers}
    if method == "GET":
        return client.get(path, headers=sent)
    if method == "DELETE":
        return client.delete(path, headers=sent)
    return client.post(path, body, content_type="application/json", headers=sent)


def assert_error(response: Any, status: int, kind: str, message: str | None = None) -> None:
    assert response.status_code == status, response.content
    body = response.json()
    assert list(body) == ["type", "error", "request_id"]  # request_id after error
    assert body["type"] == "error" and body["error"]["type"] == kind
    assert REQUEST_ID.match(body["request_id"])
    if message is not None:
        assert body["error"]["message"] == message


# --- spend limits: shapes ------------------------------------------------------------------------


def test_set_answers_200_with_the_spend_limit_shape_and_upserts_in_place(w, admin):
    first = call("POST", LIMITS, admin, {"scope": {"type": "organization"}, "amount": "20"})

    assert first.status_code == 200
    limit = first.json()
    assert set(limit) == {
        "type", "id", "scope", "amount", "currency", "period", "is_enabled",
        "created_at", "updated_at",
    }  # fmt: skip
    assert limit["type"] == "spend_limit" and limit["id"].startswith("spl_")
    assert limit["scope"] == {"type": "organization"}
    assert (limit["amount"], limit["currency"], limit["period"]) == ("20", "USD", "monthly")
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$", limit["created_at"])
    assert REQUEST_ID.match(first["request-id"]) and first["x-request-id"]
    assert "Cache-Control" not in first  # POST and DELETE carry none; GETs no-store

    again = call(
        "POST",
        LIMITS,
        admin,
        {"scope": {"type": "organization"}, "amount": "50000", "period": "monthly"},
    ).json()
    assert again["id"] == limit["id"] and again["created_at"] == limit["created_at"]
    budget = Budget.objects.get(pk=int(limit["id"][4:]))
    assert budget.amount_micros == 500 * 1_000_000 and budget.team_id is None
    assert budget.period == Budget.Period.MONTH
    assert AuditEvent.objects.filter(subject_type="governance.Budget").count() == 2

    fetched = call("GET", f"{LIMITS}/{limit['id']}", admin)
    assert fetched.json()["amount"] == "50000" and fetched["Cache-Control"] == "no-store"


def test_each_scope_maps_onto_its_owner(w, admin):
    project = factories.project(organization=w.acme, name="payments")
    bodies = [
        ({"type": "rbac_group", "rbac_group_id": "backend"}, "daily", {"team": w.backend}),
        ({"type": "user", "user_id": "vk-ml"}, "weekly", {"virtual_key": w.ml_key}),
        ({"type": "user", "user_id": "vk-backend/alice"}, "monthly", {"virtual_key": w.alice}),
        ({"type": "workspace", "workspace_id": "payments"}, "monthly", {"project": project}),
    ]
    for scope, period, owner in bodies:
        answer = call("POST", LIMITS, admin, {"scope": scope, "amount": "10000", "period": period})
        assert answer.status_code == 200, answer.content
        assert answer.json()["scope"] == scope and answer.json()["period"] == period
        assert Budget.objects.get(pk=int(answer.json()["id"][4:]), **owner).amount_micros == (
            100_000_000
        )


def test_a_null_amount_is_an_explicit_no_limit_that_enforces_nothing(w, admin):
    scope = {"type": "user", "user_id": "vk-ml"}
    limited = call("POST", LIMITS, admin, {"scope": scope, "amount": "500"}).json()
    unlimited = call("POST", LIMITS, admin, {"scope": scope, "amount": None}).json()

    assert unlimited["id"] == limited["id"] and unlimited["amount"] is None
    budget = Budget.objects.get(pk=int(limited["id"][4:]))
    assert budget.on_exhaust == Budget.OnExhaust.ALERT and budget.amount_micros == 5_000_000
    back = call("POST", LIMITS, admin, {"scope": scope, "amount": "700"}).json()
    assert back["amount"] == "700"
    assert Budget.objects.get(pk=budget.pk).on_exhaust == Budget.OnExhaust.BLOCK


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            {"scope": {"type": "organization"}, "amount": "20", "currency": "EUR"},
            'currency: Invalid literal value, expected "USD"',
        ),
        (
            {"scope": {"type": "organization"}, "amount": "20", "period": "hourly"},
            "period: Invalid enum value. Expected 'daily' | 'weekly' | 'monthly', "
            "received 'hourly'",
        ),
        (
            {"scope": {"type": "organization"}, "amount": 20},
            "amount: Expected string, received number",
        ),
        (
            {"scope": {"type": "organization"}, "amount": "1" * 15},
            "amount: must be a non-negative whole number of cents",
        ),
        (
            {"scope": {"type": "user", "user_id": "vk\x00ml"}, "amount": "1"},
            "scope.user_id: not a name",
        ),
        (  # found by the schema run: a period that is no string was a 500
            {"scope": {"type": "organization"}, "amount": "1", "period": {"a": 1}},
            "period: Invalid enum value. Expected 'daily' | 'weekly' | 'monthly', "
            "received '{'a': 1}'",
        ),
        ({"scope": {"type": ["user"]}, "amount": "1"}, "scope.type: invalid value ['user']"),
        (  # found by the schema run: a lone surrogate reached the database (500)
            {"scope": {"type": "user", "user_id": "vk\ud8a9ml"}, "amount": "1"},
            "scope.user_id: not a name",
        ),
        (
            {"scope": {"type": "rbac_group", "rbac_group_id": "m\nl"}, "amount": "1"},
            "scope.rbac_group_id: not a name",
        ),
        ({"scope": {"type": "seat_tier"}, "amount": "1"}, None),
        ({"amount": "1"}, "scope: Required"),
    ],
)
def test_invalid_bodies_get_anthropic_s_messages(w, admin, body, message):
    assert_error(call("POST", LIMITS, admin, body), 400, "invalid_request_error", message)


def test_unknown_ids_missing_keys_and_revoked_tokens(w, admin):
    assert_error(
        call("GET", f"{LIMITS}/spl_999999", admin), 404, "not_found_error", "spend limit not found"
    )
    assert_error(
        call("DELETE", f"{LIMITS}/spl_nope", admin), 404, "not_found_error", "spend limit not found"
    )
    missing = "missing or invalid admin credentials"
    assert_error(call("GET", LIMITS, None), 401, "authentication_error", missing)
    assert_error(call("GET", LIMITS, "gwapi-not-a-token"), 401, "authentication_error", missing)
    token = tokens.authenticate(admin)
    assert token is not None
    tokens.revoke_token(actor=factories.TEST_ACTOR, token=token)
    assert_error(call("GET", LIMITS, admin), 401, "authentication_error", missing)


def test_a_read_only_role_cannot_write(w):
    auditor = token_for(Role.AUDITOR, w.acme)

    answer = call("POST", LIMITS, auditor, {"scope": {"type": "organization"}, "amount": "20"})

    assert_error(answer, 403, "permission_error", "requires write:spend_limits")
    assert call("GET", LIMITS, auditor).status_code == 200


def test_the_list_pages_in_creation_order_and_filters_by_scope_type(w, admin):
    ids = [
        call("POST", LIMITS, admin, {"scope": scope, "amount": "100", "period": "daily"}).json()[
            "id"
        ]
        for scope in (
            {"type": "organization"},
            {"type": "user", "user_id": "vk-ml"},
            {"type": "user", "user_id": "vk-backend"},
        )
    ]
    factories.budget(owner=w.acme, amount_micros=1, period=Budget.Period.QUARTER)  # no shape

    whole = call("GET", LIMITS, admin).json()
    assert [row["id"] for row in whole["data"]] == ids and whole["has_more"] is False
    assert (whole["first_id"], whole["last_id"]) == (ids[0], ids[-1])

    users = call("GET", f"{LIMITS}?scope_type[]=user&limit=1", admin).json()
    assert [row["id"] for row in users["data"]] == [ids[1]] and users["has_more"] is True
    rest = call("GET", f"{LIMITS}?scope_type=user&page={users['next_page']}", admin).json()
    assert [row["id"] for row in rest["data"]] == [ids[2]] and rest["next_page"] is None
    before = call("GET", f"{LIMITS}?before_id={ids[2]}", admin).json()
    assert [row["id"] for row in before["data"]] == ids[:2]
    assert_error(
        call("GET", f"{LIMITS}?scope_type[]=seat_tier", admin), 400, "invalid_request_error"
    )


def test_delete_removes_the_budget_audited(w, admin):
    limit = call("POST", LIMITS, admin, {"scope": {"type": "organization"}, "amount": "20"}).json()

    answer = call("DELETE", f"{LIMITS}/{limit['id']}", admin)

    assert answer.status_code == 200
    assert answer.json() == {"type": "spend_limit_deleted", "id": limit["id"]}
    assert not Budget.objects.filter(pk=int(limit["id"][4:])).exists()
    assert AuditEvent.objects.filter(verb=AuditEvent.Verb.DELETED).exists()
    assert call("GET", f"{LIMITS}/{limit['id']}", admin).status_code == 404


# --- spend limits: who may do what ---------------------------------------------------------------


def test_a_team_lead_sees_and_sets_only_their_team_s_keys_within_its_ceiling(w, admin):
    other = call(
        "POST", LIMITS, admin, {"scope": {"type": "user", "user_id": "vk-ml"}, "amount": "9"}
    )
    team = call(
        "POST",
        LIMITS,
        admin,
        {"scope": {"type": "rbac_group", "rbac_group_id": "backend"}, "amount": "1000"},
    )
    lead = token_for(Role.TEAM_LEAD, w.acme, teams=(w.backend,))

    listed = call("GET", LIMITS, lead).json()
    assert [row["id"] for row in listed["data"]] == [team.json()["id"]]
    assert_error(call("GET", f"{LIMITS}/{other.json()['id']}", lead), 404, "not_found_error")
    key_scope = {"type": "user", "user_id": "vk-ml"}
    assert_error(
        call("POST", LIMITS, lead, {"scope": key_scope, "amount": "5"}), 404, "not_found_error"
    )
    assert_error(
        call(
            "POST",
            LIMITS,
            lead,
            {"scope": {"type": "rbac_group", "rbac_group_id": "backend"}, "amount": "5"},
        ),
        403,
        "permission_error",
    )
    alice = {"type": "user", "user_id": "vk-backend/alice"}
    assert call("POST", LIMITS, lead, {"scope": alice, "amount": "500"}).status_code == 200
    over = call("POST", LIMITS, lead, {"scope": alice, "amount": "5000"})
    assert_error(over, 400, "invalid_request_error")
    assert "team's" in over.json()["error"]["message"]


def test_finance_of_another_organization_gets_404s(w, admin):
    limit = call("POST", LIMITS, admin, {"scope": {"type": "organization"}, "amount": "20"}).json()
    finance = token_for(Role.FINANCE, w.globex)

    assert_error(call("GET", f"{LIMITS}/{limit['id']}", finance), 404, "not_found_error")
    assert_error(call("DELETE", f"{LIMITS}/{limit['id']}", finance), 404, "not_found_error")
    assert call("GET", LIMITS, finance).json()["data"] == []
    assert_error(
        call("GET", LIMITS, finance, **{"x-gateway-organization": "acme"}), 404, "not_found_error"
    )


def test_a_token_with_roles_in_several_organizations_names_one(w):
    everywhere = token_for(Role.FINANCE)  # finance in every organization: acme and globex

    assert_error(call("GET", LIMITS, everywhere), 400, "invalid_request_error")
    named = call(
        "POST",
        LIMITS,
        everywhere,
        {"scope": {"type": "rbac_group", "rbac_group_id": "rival"}, "amount": "20"},
        **{"x-gateway-organization": "globex"},
    )
    assert named.status_code == 200
    assert Budget.objects.get(pk=int(named.json()["id"][4:])).team == w.rival
    by_query = call("GET", f"{LIMITS}?organization={w.globex.pk}", everywhere).json()
    assert [row["id"] for row in by_query["data"]] == [named.json()["id"]]


# --- effective -----------------------------------------------------------------------------------


def test_effective_names_the_cap_that_blocks_first_with_its_spend(w, admin):
    call("POST", LIMITS, admin, {"scope": {"type": "organization"}, "amount": "20"})
    now = timezone.now()
    write(event(now - dt.timedelta(seconds=5), key=w.alice, cost=217_000))  # 21.7 cents

    rows = call("GET", f"{LIMITS}/effective", admin).json()

    assert rows["next_page"] is None
    [row] = rows["data"]  # only keys with spend are listed without user_ids[]
    assert row["scope"] == {"type": "user", "user_id": "vk-backend/alice"}
    assert row["actor"] == {
        "type": "user_actor",
        "user_id": "vk-backend/alice",
        "name": "alice",
        "email_address": "alice@acme.dev",
        "deleted": False,
    }
    assert (row["amount"], row["period"], row["source"]) == (
        "20",
        "monthly",
        {"type": "organization"},
    )
    assert row["period_to_date_spend"] == "21.7" and row["groups"] == ["backend"]
    assert row["spend_limit_id"].startswith("spl_")

    asked = call(
        "GET", f"{LIMITS}/effective?user_ids[]=vk-ml&period[]=daily&period[]=monthly", admin
    ).json()["data"]
    assert [(r["period"], r["amount"], r["source"], r["period_to_date_spend"]) for r in asked] == [
        ("daily", None, None, "0"),
        ("monthly", "20", {"type": "organization"}, "21.7"),
    ]
    assert_error(
        call("GET", f"{LIMITS}/effective?sort=spend_desc", admin), 400, "invalid_request_error"
    )


def test_effective_prefers_the_tighter_team_cap(w, admin):
    call("POST", LIMITS, admin, {"scope": {"type": "organization"}, "amount": "100000"})
    team = call(
        "POST",
        LIMITS,
        admin,
        {"scope": {"type": "rbac_group", "rbac_group_id": "backend"}, "amount": "50"},
    ).json()
    write(event(timezone.now() - dt.timedelta(seconds=5), key=w.backend_key, cost=100_000))

    [row] = call("GET", f"{LIMITS}/effective?user_ids[]=vk-backend&period[]=monthly", admin).json()[
        "data"
    ]

    assert row["spend_limit_id"] == team["id"] and row["amount"] == "50"
    assert row["source"] == {"type": "rbac_group", "rbac_group_id": "backend"}
    assert row["period_to_date_spend"] == "10"


# --- usage and cost reports ----------------------------------------------------------------------


def seed_usage(w: World) -> None:
    rows = []
    for day in range(3):
        base = at("2026-11-02 10:00") + dt.timedelta(days=day)
        rows += [
            event(base, key=w.backend_key, cost=1_000_000, served_model="claude-sonnet-4-6"),
            event(base, key=w.ml_key, cost=2_500_000, served_model="claude-opus-4-1"),
            event(base, key=w.rival_key, cost=9_000_000),
        ]
    write(*rows)
    rollups.run_rollups(settle_seconds=0)
    write(event(at("2026-11-04 11:00"), key=w.alice, cost=500_000))  # not rolled up yet


USAGE = "/v1/organizations/usage_report/messages"
COST = "/v1/organizations/cost_report"


def test_usage_report_has_anthropic_s_shape_per_day_and_key(w, admin):
    seed_usage(w)
    query = (
        "starting_at=2026-11-02T00:00:00Z&ending_at=2026-11-05T00:00:00Z"
        "&group_by[]=api_key_id&group_by[]=model&bucket_width=1d"
    )

    report = call("GET", f"{USAGE}?{query}", admin).json()

    assert set(report) == {"data", "has_more", "next_page"} and report["has_more"] is False
    assert [b["starting_at"] for b in report["data"]] == [
        "2026-11-02T00:00:00Z",
        "2026-11-03T00:00:00Z",
        "2026-11-04T00:00:00Z",
    ]
    assert report["data"][0]["ending_at"] == "2026-11-03T00:00:00Z"
    last = {r["api_key_id"]: r for r in report["data"][2]["results"]}
    assert set(last) == {"vk-backend", "vk-ml", "vk-backend/alice"}  # not globex's key
    ml = last["vk-ml"]
    assert ml == {
        "uncached_input_tokens": 100,
        "cache_creation": {"ephemeral_5m_input_tokens": 4, "ephemeral_1h_input_tokens": 0},
        "cache_read_input_tokens": 5,
        "output_tokens": 20,
        "server_tool_use": {"web_search_requests": 0},
        "api_key_id": "vk-ml",
        "workspace_id": None,
        "model": "claude-opus-4-1",
        "service_tier": None,
        "context_window": None,
        "inference_geo": None,
        "speed": None,
        "account_id": None,
        "service_account_id": None,
    }


def test_usage_report_pages_by_bucket_and_refuses_minutes(w, admin):
    seed_usage(w)
    first = call(
        "GET",
        f"{USAGE}?starting_at=2026-11-02T05:00:00Z&ending_at=2026-11-05T00:00:00Z&limit=2",
        admin,
    ).json()

    assert len(first["data"]) == 2 and first["has_more"] is True
    second = call(
        "GET",
        f"{USAGE}?starting_at=2026-11-02T05:00:00Z&ending_at=2026-11-05T00:00:00Z&limit=2&page={first['next_page']}",
        admin,
    ).json()
    assert [b["starting_at"] for b in second["data"]] == ["2026-11-04T00:00:00Z"]
    assert second["has_more"] is False and second["next_page"] is None
    [total] = second["data"][0]["results"]
    assert total["uncached_input_tokens"] == 300 and total["api_key_id"] is None
    hourly = call(
        "GET",
        f"{USAGE}?starting_at=2026-11-02T10:00:00Z&bucket_width=1h&limit=2&models[]=claude-opus-4-1",
        admin,
    ).json()
    assert [len(b["results"]) for b in hourly["data"]] == [1, 0]
    assert_error(
        call("GET", f"{USAGE}?starting_at=2026-11-02T00:00:00Z&bucket_width=1m", admin),
        400,
        "invalid_request_error",
    )
    assert_error(call("GET", USAGE, admin), 400, "invalid_request_error", "starting_at: Required")


def test_cost_report_gives_cents_as_decimal_strings(w, admin):
    seed_usage(w)
    query = "starting_at=2026-11-02T00:00:00Z&ending_at=2026-11-05T00:00:00Z"

    plain = call("GET", f"{COST}?{query}", admin).json()
    by_model = call("GET", f"{COST}?{query}&group_by[]=description", admin).json()

    assert plain["data"][0]["results"] == [
        {
            "amount": "350",
            "currency": "USD",
            "cost_type": None,
            "token_type": None,
            "description": None,
            "model": None,
            "context_window": None,
            "service_tier": None,
            "workspace_id": None,
        }
    ]
    assert plain["data"][2]["results"][0]["amount"] == "400"  # the row not rolled up counts
    day = {r["model"]: r for r in by_model["data"][0]["results"]}
    assert day["claude-opus-4-1"]["amount"] == "250"
    assert day["claude-opus-4-1"]["cost_type"] == "tokens"
    assert_error(
        call("GET", f"{COST}?{query}&bucket_width=1h", admin), 400, "invalid_request_error"
    )


def test_a_team_lead_s_usage_report_holds_only_their_team(w):
    seed_usage(w)
    lead = token_for(Role.TEAM_LEAD, w.acme, teams=(w.ml,))

    report = call(
        "GET",
        f"{USAGE}?starting_at=2026-11-02T00:00:00Z&ending_at=2026-11-05T00:00:00Z&group_by[]=api_key_id",
        lead,
    ).json()

    keys = {r["api_key_id"] for bucket in report["data"] for r in bucket["results"]}
    assert keys == {"vk-ml"}
