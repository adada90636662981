"""Roles on /logs and /dashboards/ (and their CSV, live feed and detail pages): each user reads
the requests and spend of their organizations, or a team lead of their teams, and no other."""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.utils import timezone

from governance.models import Organization, Role, Team, VirtualKey
from telemetry import rollups
from tests import factories
from tests.roles import World, member, two_organizations
from tests.telemetry.usage_events import event, write

pytestmark = pytest.mark.django_db

LOGS = "/logs"
SPEND = "/dashboards/spend"


@dataclass
class SpendingWorld(World):
    """tests.roles.World with a sub-key of the backend key, and spend on every key."""

    sub_key: VirtualKey


@pytest.fixture
def world() -> SpendingWorld:
    base = two_organizations()
    world = SpendingWorld(
        **vars(base), sub_key=factories.virtual_key(parent=base.backend_key, name="agent")
    )
    now = timezone.now()
    rows = []
    # Two days back (rolled up below) and a minute ago (not rolled up yet): both must be scoped.
    for when in (now - dt.timedelta(days=2), now - dt.timedelta(minutes=1)):
        for key, cost in (
            (world.backend_key, 1_000_000),
            (world.sub_key, 500_000),
            (world.ml_key, 3_000_000),
            (world.rival_key, 7_000_000),
        ):
            rows.append(
                event(
                    when,
                    key=key,
                    cost=cost,
                    request_id=f"req-{key.name}-{when:%d%H%M}",
                    session_id=f"sess-{key.name}",
                )
            )
    write(*rows[:4])
    rollups.run_rollups(settle_seconds=0)
    write(*rows[4:])
    return world


def client_for(role: Role, organization: Organization | None, *teams: Team) -> Client:
    where = organization.name if organization is not None else "all"
    client = Client()
    client.force_login(member(f"{role}-{where}", role, organization, teams))
    return client


def request_ids(response: Any) -> set[str]:
    return set(re.findall(r'href="/logs/(req-[^"]+)"', response.content.decode()))


def csv_rows(response: Any) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(response.content.decode())))


# --- /logs -----------------------------------------------------------------------------------


def test_team_lead_reads_only_their_teams_requests(world):
    lead = client_for(Role.TEAM_LEAD, world.acme, world.backend)

    response = lead.get(LOGS, {"range": "7d"})

    assert response.status_code == 200
    names = {r.rsplit("-", 1)[0] for r in request_ids(response)}
    assert names == {"req-vk-backend", "req-agent"}
    # Asking for another team or organization by filter finds nothing.
    assert not request_ids(lead.get(LOGS, {"range": "7d", "team": world.ml.pk}))
    assert not request_ids(lead.get(LOGS, {"range": "7d", "organization": world.globex.pk}))


def test_log_filter_menus_offer_only_what_the_user_may_see(world):
    lead = client_for(Role.TEAM_LEAD, world.acme, world.backend)

    html = lead.get(LOGS).content.decode()

    assert "acme/backend" in html and "vk-backend" in html
    assert "globex" not in html and "acme/ml" not in html and "vk-ml" not in html


def test_a_request_of_another_team_or_organization_is_not_found(world):
    lead = client_for(Role.TEAM_LEAD, world.acme, world.backend)
    finance = client_for(Role.FINANCE, world.acme)
    [own] = [r for r in request_ids(lead.get(LOGS, {"range": "7d"})) if "vk-backend" in r][:1]
    other_team = own.replace("vk-backend", "vk-ml")
    other_org = own.replace("vk-backend", "vk-rival")

    assert lead.get(f"{LOGS}/{own}").status_code == 200
    assert lead.get(f"{LOGS}/{other_team}").status_code == 404
    assert finance.get(f"{LOGS}/{other_team}").status_code == 200
    assert finance.get(f"{LOGS}/{other_org}").status_code == 404


def test_live_feed_brings_only_the_users_rows(world):
    lead = client_for(Role.TEAM_LEAD, world.acme, world.backend)
    write(
        event(timezone.now(), key=world.ml_key, request_id="req-live-ml"),
        event(timezone.now(), key=world.backend_key, request_id="req-live-backend"),
    )

    found = lead.get(f"{LOGS}/live", {"since": 0}).json()

    assert "req-live-backend" in found["html"] and "req-live-ml" not in found["html"]


def test_organization_roles_read_their_organizations_requests(world):
    for role in (Role.FINANCE, Role.AUDITOR, Role.PLATFORM_ADMIN):
        ids = request_ids(client_for(role, world.acme).get(LOGS, {"range": "7d"}))
        assert len(ids) == 6 and not any("rival" in r for r in ids)
    everywhere = request_ids(client_for(Role.AUDITOR, None).get(LOGS, {"range": "7d"}))
    assert len(everywhere) == 8


def test_staff_without_a_role_is_sent_to_the_login(world):
    staff = get_user_model().objects.create_user("old-staff", is_staff=True)
    client = Client()
    client.force_login(staff)
    for url in (LOGS, f"{LOGS}/live?since=0", SPEND, f"{SPEND}?format=csv"):
        assert client.get(url).status_code == 302


# --- /dashboards/spend ------------------------------------------------------------------------


def test_team_lead_sees_their_teams_spend_only(world):
    lead = client_for(Role.TEAM_LEAD, world.acme, world.backend)

    response = lead.get(SPEND, {"range": "7d"})

    assert [org.name for org in response.context["orgs"]] == ["acme"]
    assert response.context["overall"].requests == 4
    assert response.context["overall_cost"] == "$3.00"
    legend = {item.label for item in response.context["charts"][0]["chart"].legend}
    assert legend == {"backend"}
    assert {k["name"] for k in response.context["keys"]} == {"vk-backend", "vk-backend/agent"}
    sessions = {s["session"].session_id for s in response.context["sessions"]}
    assert sessions == {"sess-vk-backend", "sess-agent"}
    # Another organization by parameter: their own is shown instead.
    other = lead.get(SPEND, {"range": "7d", "org": world.globex.pk})
    assert other.context["org"] == world.acme and other.context["overall_cost"] == "$3.00"


def test_organization_roles_see_their_whole_organization(world):
    finance = client_for(Role.FINANCE, world.acme)

    response = finance.get(SPEND, {"range": "7d"})

    assert [org.name for org in response.context["orgs"]] == ["acme"]
    assert response.context["overall_cost"] == "$9.00"


def test_budgets_on_the_dashboard_are_those_the_user_may_see(world):
    factories.budget(owner=world.acme, amount_micros=100_000_000)
    factories.budget(owner=world.backend, amount_micros=10_000_000)
    factories.budget(owner=world.ml, amount_micros=20_000_000)
    lead = client_for(Role.TEAM_LEAD, world.acme, world.backend)

    owners = [line.owner for line in lead.get(SPEND).context["budgets"]]
    exported = csv_rows(lead.get(SPEND, {"format": "csv", "export": "budgets"}))

    assert owners == ["team backend"]
    assert [row["owner"] for row in exported] == ["team backend"]


def test_csv_exports_hold_only_the_team_leads_rows(world):
    lead = client_for(Role.TEAM_LEAD, world.acme, world.backend)
    params = {"range": "7d", "format": "csv"}

    teams = csv_rows(lead.get(SPEND, {**params, "export": "team"}))
    keys = csv_rows(lead.get(SPEND, {**params, "export": "keys"}))
    sessions = csv_rows(lead.get(SPEND, {**params, "export": "sessions"}))
    models = csv_rows(lead.get(SPEND, {**params, "export": "model"}))

    assert {row["team"] for row in teams} == {"backend"}
    assert {row["key"] for row in keys} == {"vk-backend", "vk-backend/agent"}
    assert {row["team"] for row in sessions} == {"backend"}
    assert sum(Decimal(row["cost_usd"]) for row in models) == Decimal("3")


def test_a_team_lead_of_no_team_sees_no_spend(world):
    lead = client_for(Role.TEAM_LEAD, world.acme)
    assert lead.get(SPEND).context["orgs"] == []
    assert not request_ids(lead.get(LOGS, {"range": "7d"}))
