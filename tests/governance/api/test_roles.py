"""Each role's boundaries over the API. Another organization's or team's object is a 404 (ids
do not leak), a visible object the role may not change is a 403."""

from __future__ import annotations

import pytest

from governance.models import Budget, Role
from governance.services import tokens
from telemetry.models import AlertChannel
from tests import factories
from tests.governance.api.conftest import Api, MakeApi, make_user
from tests.roles import World

pytestmark = pytest.mark.django_db


def ids(response) -> set[int]:
    assert response.status_code == 200, response.json()
    return {row["id"] for row in response.json()["results"]}


def channel(world: World, organization) -> AlertChannel:
    row = AlertChannel(organization_id=organization.pk, name="ops", kind="email", target="a@b.co")
    row.save()
    return row


# --- platform admin of one organization -----------------------------------------------------


def test_an_org_admin_sees_and_changes_only_their_organization(
    acme_admin: Api, world: World
) -> None:
    rival = f"/api/v1/keys/{world.rival_key.pk}/"

    assert ids(acme_admin.get("/api/v1/keys/")) == {world.backend_key.pk, world.ml_key.pk}
    assert ids(acme_admin.get("/api/v1/organizations/")) == {world.acme.pk}
    assert acme_admin.get(rival).status_code == 404
    assert acme_admin.patch(rival, {"owner": "me"}).status_code == 404
    assert acme_admin.post(f"{rival}revoke/").status_code == 404
    assert acme_admin.post(f"{rival}rotate/").status_code == 404
    assert acme_admin.get(f"/api/v1/teams/{world.rival.pk}/").status_code == 404
    assert acme_admin.delete(f"/api/v1/teams/{world.rival.pk}/").status_code == 404
    assert acme_admin.patch(f"/api/v1/organizations/{world.globex.pk}/", {}).status_code == 404


def test_an_org_admin_cannot_create_in_another_organization(acme_admin: Api, world: World) -> None:
    in_rival = acme_admin.post("/api/v1/keys/", {"team": world.rival.pk, "name": "x"})
    in_globex = acme_admin.post("/api/v1/teams/", {"organization": world.globex.pk, "name": "x"})

    # Refused like an id that does not exist: nothing tells that the team is there.
    assert in_rival.status_code == 400 and "team" in in_rival.json()
    assert in_globex.status_code == 400 and "organization" in in_globex.json()
    assert not world.rival.virtual_keys.filter(name="x").exists()


def test_an_org_admin_reads_shared_objects_but_changes_none(acme_admin: Api, world: World) -> None:
    assert acme_admin.get("/api/v1/prices/").status_code == 200
    assert acme_admin.post("/api/v1/organizations/", {"name": "mine"}).status_code == 403
    assert acme_admin.post("/api/v1/providers/", {"name": "p", "kind": "mock"}).status_code == 403
    assert acme_admin.post("/api/v1/routes/", {"public_name": "m"}).status_code == 403


def test_an_org_admin_manages_neither_memberships_nor_the_audit_log(
    acme_admin: Api, world: World
) -> None:
    assert ids(acme_admin.get("/api/v1/memberships/")) == set()
    assert acme_admin.get("/api/v1/audit-events/").json()["results"] == []
    assert acme_admin.get("/api/v1/audit-events/verify/").status_code == 403
    user = make_user()
    created = acme_admin.post(
        "/api/v1/memberships/",
        {"user": user.username, "organization": world.acme.pk, "role": "auditor"},
    )
    assert created.status_code == 403
    assert not user.gateway_memberships.exists()


def test_another_organization_s_budgets_and_channels_are_not_found(
    acme_admin: Api, world: World
) -> None:
    budget = factories.budget(owner=world.rival, amount_micros=1_000_000)
    rival_channel = channel(world, world.globex)

    for url in (f"/api/v1/budgets/{budget.pk}/", f"/api/v1/alert-channels/{rival_channel.pk}/"):
        assert acme_admin.get(url).status_code == 404
        assert acme_admin.patch(url, {"enabled": False}).status_code == 404
        assert acme_admin.delete(url).status_code == 404
    assert Budget.objects.filter(pk=budget.pk).exists()


# --- finance --------------------------------------------------------------------------------


def test_finance_reads_keys_but_cannot_change_them(as_role, world: World) -> None:
    finance = as_role(Role.FINANCE, world.acme)
    key = f"/api/v1/keys/{world.backend_key.pk}/"

    assert finance.get(key).status_code == 200
    assert finance.patch(key, {"owner": "x"}).status_code == 403
    assert finance.post(f"{key}revoke/").status_code == 403
    assert finance.post("/api/v1/keys/", {"team": world.backend.pk, "name": "x"}).status_code == 403
    assert finance.get(f"/api/v1/keys/{world.rival_key.pk}/").status_code == 404


def test_finance_sets_budgets_and_alert_channels_of_their_organization(
    as_role, world: World
) -> None:
    finance = as_role(Role.FINANCE, world.acme)

    team_budget = finance.post(
        "/api/v1/budgets/", {"team": world.backend.pk, "amount_micros": 10**8, "period": "month"}
    )
    # Finance is not held to a team's ceiling: it sets the ceilings.
    key_budget = finance.post(
        "/api/v1/budgets/",
        {"virtual_key": world.backend_key.pk, "amount_micros": 10**9, "period": "month"},
    )
    created = finance.post(
        "/api/v1/alert-channels/",
        {"organization": world.acme.pk, "name": "fin", "kind": "email", "target": "f@acme.test"},
    )
    assert (team_budget.status_code, key_budget.status_code, created.status_code) == (201,) * 3
    rival = finance.post(
        "/api/v1/budgets/", {"team": world.rival.pk, "amount_micros": 1, "period": "month"}
    )
    assert rival.status_code == 400


def test_finance_of_one_organization_cannot_change_prices(as_role, world: World) -> None:
    finance = as_role(Role.FINANCE, world.acme)
    price = finance.get("/api/v1/prices/").json()["results"][0]

    assert finance.patch(f"/api/v1/prices/{price['id']}/", {"note": "x"}).status_code == 403
    everywhere = as_role(Role.FINANCE)
    assert everywhere.patch(f"/api/v1/prices/{price['id']}/", {"note": "x"}).status_code == 200


# --- team lead ------------------------------------------------------------------------------


@pytest.fixture
def lead(as_role: MakeApi, world: World) -> Api:
    return as_role(Role.TEAM_LEAD, world.acme, (world.backend,))


def test_a_team_lead_sees_only_their_team(lead: Api, world: World) -> None:
    assert ids(lead.get("/api/v1/keys/")) == {world.backend_key.pk}
    assert ids(lead.get("/api/v1/teams/")) == {world.backend.pk}
    assert lead.get(f"/api/v1/keys/{world.ml_key.pk}/").status_code == 404
    assert lead.patch(f"/api/v1/keys/{world.ml_key.pk}/", {"owner": "x"}).status_code == 404
    assert lead.get(f"/api/v1/teams/{world.ml.pk}/").status_code == 404


def test_a_team_lead_issues_keys_and_sub_keys_in_their_team_only(lead: Api, world: World) -> None:
    key = lead.post("/api/v1/keys/", {"team": world.backend.pk, "name": "dev"})
    sub = lead.post("/api/v1/keys/", {"parent": world.backend_key.pk, "name": "bot"})
    elsewhere = lead.post("/api/v1/keys/", {"team": world.ml.pk, "name": "dev"})
    teamless = lead.post("/api/v1/keys/", {"organization": world.acme.pk, "name": "loose"})

    assert key.status_code == 201 and key.json()["secret"]
    assert sub.status_code == 201 and sub.json()["team"] == world.backend.pk
    assert elsewhere.status_code == 400
    assert teamless.status_code == 403


def test_a_team_lead_s_key_budgets_stay_within_the_team_s_ceiling(lead: Api, world: World) -> None:
    ceiling = factories.budget(owner=world.backend, amount_micros=100_000_000, period="month")
    url = "/api/v1/budgets/"
    body = {"virtual_key": world.backend_key.pk, "period": "month"}

    within = lead.post(url, {**body, "amount_micros": 40_000_000})
    above = lead.post(url, {**body, "amount_micros": 150_000_000})
    raised = lead.patch(f"{url}{within.json()['id']}/", {"amount_micros": 100_000_001})

    assert within.status_code == 201
    assert above.status_code == 400 and "amount_micros" in above.json()
    assert raised.status_code == 400
    assert lead.patch(f"{url}{ceiling.pk}/", {"amount_micros": 1}).status_code == 403
    assert lead.get(f"{url}{ceiling.pk}/").status_code == 200


def test_a_team_lead_cannot_budget_another_team_s_key(lead: Api, world: World) -> None:
    budget = factories.budget(owner=world.ml_key, amount_micros=1_000)

    created = lead.post(
        "/api/v1/budgets/",
        {"virtual_key": world.ml_key.pk, "amount_micros": 1, "period": "month"},
    )

    assert created.status_code == 400
    assert lead.get(f"/api/v1/budgets/{budget.pk}/").status_code == 404


# --- auditor and superuser ------------------------------------------------------------------


def test_an_auditor_reads_everything_of_their_organization_and_changes_nothing(
    as_role, world: World
) -> None:
    auditor = as_role(Role.AUDITOR, world.acme)

    assert ids(auditor.get("/api/v1/keys/")) == {world.backend_key.pk, world.ml_key.pk}
    assert (
        auditor.patch(f"/api/v1/teams/{world.backend.pk}/", {"description": "x"}).status_code == 403
    )
    assert (
        auditor.post("/api/v1/teams/", {"organization": world.acme.pk, "name": "x"}).status_code
        == 403
    )
    assert auditor.get(f"/api/v1/keys/{world.rival_key.pk}/").status_code == 404


def test_an_auditor_everywhere_reads_and_verifies_the_audit_log(as_role, world: World) -> None:
    auditor = as_role(Role.AUDITOR)

    assert auditor.get("/api/v1/audit-events/").json()["results"]
    assert auditor.get("/api/v1/audit-events/verify/").json()["ok"] is True


def test_a_superuser_reaches_every_organization(root: Api, world: World) -> None:
    assert ids(root.get("/api/v1/organizations/")) == {world.acme.pk, world.globex.pk}
    assert root.patch(f"/api/v1/keys/{world.rival_key.pk}/", {"owner": "x"}).status_code == 200


# --- API tokens -----------------------------------------------------------------------------


def test_each_user_manages_only_their_own_api_tokens(as_role: MakeApi, world: World) -> None:
    finance, other = as_role(Role.FINANCE, world.acme), make_user(Role.FINANCE, world.acme)
    theirs = tokens.create_token(actor=factories.TEST_ACTOR, user=other, name="t").token.pk

    mine = finance.get("/api/v1/api-tokens/").json()["results"]
    for_other = finance.post("/api/v1/api-tokens/", {"name": "x", "user": other.username})

    assert len(mine) == 1 and mine[0]["user"] != other.username
    assert for_other.status_code == 403
    assert finance.get(f"/api/v1/api-tokens/{theirs}/").status_code == 404
    assert finance.post(f"/api/v1/api-tokens/{theirs}/revoke/").status_code == 404


def test_a_platform_admin_everywhere_issues_tokens_for_anyone(
    as_role: MakeApi, world: World
) -> None:
    admin, user = as_role(Role.PLATFORM_ADMIN), make_user(Role.AUDITOR, world.acme)

    created = admin.post("/api/v1/api-tokens/", {"name": "audit-bot", "user": user.username})

    assert created.status_code == 201 and created.json()["user"] == user.username
    assert user.username in {
        row["user"] for row in admin.get("/api/v1/api-tokens/").json()["results"]
    }
