"""Roles in the Django admin: what each one lists, opens, changes and adds, object by object.

Django's model permissions play no part: users hold gateway roles (memberships) and no Django
permission at all, and a staff user with every Django permission but no role sees nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import reverse

from governance.admin.permissions import REFUSED
from governance.models import (
    ApiToken,
    AuditEvent,
    Budget,
    Membership,
    Organization,
    Project,
    Provider,
    Role,
    Team,
    VirtualKey,
)
from governance.services import providers, tokens
from telemetry import channels
from telemetry.models import AlertChannel, BudgetPeriodRecord
from tests import factories
from tests.factories import TEST_ACTOR
from tests.governance.test_admin import admin_url, form_data
from tests.roles import World, member, two_organizations

pytestmark = pytest.mark.django_db
User = get_user_model()


@dataclass
class BudgetedWorld(World):
    """tests.roles.World, a project in acme, and a budget on a team, a key and the rival."""

    team_budget: Budget
    key_budget: Budget
    rival_budget: Budget


@pytest.fixture
def world() -> BudgetedWorld:
    base = two_organizations()
    factories.project(organization=base.acme, name="payments")
    return BudgetedWorld(
        **vars(base),
        team_budget=factories.budget(owner=base.backend, amount_micros=100_000_000, period="month"),
        key_budget=factories.budget(
            owner=base.backend_key, amount_micros=10_000_000, period="month"
        ),
        rival_budget=factories.budget(owner=base.rival, amount_micros=50_000_000, period="month"),
    )


def client_of(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def as_role(role: Role, organization: Organization | None, *teams: Team) -> Client:
    where = organization.name if organization is not None else "all"
    return client_of(member(f"{role}-{where}", role, organization, teams))


def listed(client: Client, model: type[Any]) -> str:
    opts = model._meta
    response = client.get(reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist"))
    assert response.status_code == 200
    return str(response.content.decode())


def is_not_found(response: Any) -> bool:
    """The admin's answer for a row outside the user's queryset: the same as for no row."""
    return bool(response.status_code == 302 and response.url == reverse("admin:index"))


# --- reaching the admin ---------------------------------------------------------------------


def test_a_role_lets_a_user_into_the_admin_and_django_permissions_do_not(world):
    lead = as_role(Role.TEAM_LEAD, world.acme, world.backend)
    index = lead.get(reverse("admin:index")).content.decode()
    assert "Virtual keys" in index and "Budgets" in index
    assert "Projects" not in index and "Audit events" not in index and "Memberships" not in index

    staff = User.objects.create_user("old-staff", is_staff=True)
    staff.user_permissions.set(Permission.objects.all())
    client = client_of(staff)
    assert "Virtual keys" not in client.get(reverse("admin:index")).content.decode()
    assert client.get(admin_url(VirtualKey, "changelist")).status_code == 403


# --- lists and object pages -----------------------------------------------------------------


def test_team_lead_lists_only_their_teams_keys_budgets_and_team(world):
    lead = as_role(Role.TEAM_LEAD, world.acme, world.backend)

    keys = listed(lead, VirtualKey)
    assert "vk-backend" in keys and "vk-ml" not in keys and "vk-rival" not in keys
    teams = listed(lead, Team)
    assert ">backend<" in teams and ">ml<" not in teams
    budgets = listed(lead, Budget)
    assert budgets.count('class="action-select"') == 2  # the team's and its key's
    assert lead.get(admin_url(Project, "changelist")).status_code == 403


def test_filters_and_foreign_key_menus_name_only_what_the_user_sees(world):
    lead = as_role(Role.TEAM_LEAD, world.acme, world.backend)

    sidebar = listed(lead, VirtualKey)
    assert "globex" not in sidebar and ">ml<" not in sidebar
    add_page = lead.get(admin_url(VirtualKey, "add")).content.decode()
    assert "vk-ml" not in add_page and "globex" not in add_page
    found = lead.get(
        reverse("admin:autocomplete"),
        {
            "app_label": "governance",
            "model_name": "virtualkey",
            "field_name": "team",
            "term": "",
        },
    ).json()
    assert [row["text"] for row in found["results"]] == ["acme/backend"]


def test_another_organizations_object_is_not_found_and_cannot_be_changed(world):
    admin_of_acme = as_role(Role.PLATFORM_ADMIN, world.acme)
    url = admin_url(VirtualKey, "change", world.rival_key.pk)

    assert is_not_found(admin_of_acme.get(url))
    assert is_not_found(admin_of_acme.post(url, {"name": "hijacked"}))
    assert is_not_found(admin_of_acme.get(admin_url(Budget, "change", world.rival_budget.pk)))
    assert VirtualKey.objects.get(pk=world.rival_key.pk).name == "vk-rival"
    # Its own organization's key opens and saves.
    own = admin_url(VirtualKey, "change", world.ml_key.pk)
    html = admin_of_acme.get(own).content.decode()
    response = admin_of_acme.post(own, form_data(html, name="vk-ml-2"))
    assert response.status_code == 302
    assert VirtualKey.objects.get(pk=world.ml_key.pk).name == "vk-ml-2"


def test_team_lead_opens_another_teams_key_as_not_found(world):
    lead = as_role(Role.TEAM_LEAD, world.acme, world.backend)
    assert is_not_found(lead.get(admin_url(VirtualKey, "change", world.ml_key.pk)))


def test_finance_reads_keys_but_cannot_change_them(world):
    finance = as_role(Role.FINANCE, world.acme)
    url = admin_url(VirtualKey, "change", world.backend_key.pk)

    page = finance.get(url)
    html = page.content.decode()
    assert page.status_code == 200 and "vk-backend" in html
    assert 'name="_save"' not in html and 'name="name"' not in html  # read-only
    assert finance.post(url, {"name": "renamed"}).status_code == 403
    assert finance.get(admin_url(VirtualKey, "add")).status_code == 403
    assert VirtualKey.objects.get(pk=world.backend_key.pk).name == "vk-backend"
    # Budgets are theirs to change.
    budget_url = admin_url(Budget, "change", world.team_budget.pk)
    budget_page = finance.get(budget_url).content.decode()
    response = finance.post(budget_url, form_data(budget_page, amount_usd="150"))
    assert response.status_code == 302
    assert Budget.objects.get(pk=world.team_budget.pk).amount_micros == 150_000_000


def test_team_lead_adding_a_key_to_another_team_is_refused(world):
    lead = as_role(Role.TEAM_LEAD, world.acme, world.backend)
    add = admin_url(VirtualKey, "add")

    to_ml = lead.post(add, {"name": "sneaky", "team": world.ml.pk})
    no_team = lead.post(add, {"name": "loose", "organization": world.acme.pk})

    assert to_ml.status_code == 200 and "Select a valid choice" in to_ml.content.decode()
    assert no_team.status_code == 200 and REFUSED in no_team.content.decode()
    assert not VirtualKey.objects.filter(name__in=["sneaky", "loose"]).exists()
    # Their own team, and a sub-key of their team's key, are theirs to add.
    assert lead.post(add, {"name": "mine", "team": world.backend.pk}).status_code == 200
    assert lead.post(add, {"name": "bot", "parent": world.backend_key.pk}).status_code == 200
    assert VirtualKey.objects.get(name="mine").team == world.backend
    assert VirtualKey.objects.get(name="bot").team == world.backend


def test_team_lead_changes_key_budgets_within_the_team_ceiling_but_not_the_teams_own(world):
    lead = as_role(Role.TEAM_LEAD, world.acme, world.backend)
    team_url = admin_url(Budget, "change", world.team_budget.pk)
    key_url = admin_url(Budget, "change", world.key_budget.pk)

    team_page = lead.get(team_url).content.decode()
    assert 'name="_save"' not in team_page and "$100.00" in team_page  # read-only, in dollars
    assert lead.post(team_url, {"amount_usd": "999"}).status_code == 403
    key_page = lead.get(key_url).content.decode()
    above = lead.post(key_url, form_data(key_page, amount_usd="500"))
    assert above.status_code == 200 and "ceiling" in above.content.decode()
    within = lead.post(key_url, form_data(key_page, amount_usd="50"))
    assert within.status_code == 302
    assert Budget.objects.get(pk=world.key_budget.pk).amount_micros == 50_000_000
    # A new budget for the team itself is not theirs.
    refused = lead.post(
        admin_url(Budget, "add"),
        {"team": world.backend.pk, "amount_usd": "1", "period": "month", "on_exhaust": "block"},
    )
    assert refused.status_code == 200 and REFUSED in refused.content.decode()


def test_inlines_are_read_only_where_the_rows_are_not_the_users(world):
    lead = as_role(Role.TEAM_LEAD, world.acme, world.backend)
    key_page = lead.get(admin_url(VirtualKey, "change", world.backend_key.pk)).content.decode()
    team_page = lead.get(admin_url(Team, "change", world.backend.pk)).content.decode()

    assert 'name="budgets-0-amount_usd"' in key_page  # the key's budgets: editable
    assert 'name="budgets-0-amount_usd"' not in team_page  # the team's own: read-only
    assert "$100.00" in team_page  # shown all the same


def test_auditor_reads_everything_of_their_organization_and_changes_nothing(world):
    auditor = as_role(Role.AUDITOR, world.acme)

    for model in (VirtualKey, Budget, Team, Organization, Project, Provider):
        assert auditor.get(admin_url(model, "changelist")).status_code == 200
        assert auditor.get(admin_url(model, "add")).status_code == 403
    assert "vk-rival" not in listed(auditor, VirtualKey)
    page = auditor.get(admin_url(Team, "change", world.backend.pk)).content.decode()
    assert 'name="_save"' not in page
    assert auditor.post(admin_url(Team, "change", world.backend.pk), {}).status_code == 403
    assert auditor.get(admin_url(AuditEvent, "changelist")).status_code == 403  # not everywhere
    everywhere = as_role(Role.AUDITOR, None)
    assert everywhere.get(admin_url(AuditEvent, "changelist")).status_code == 200


def test_shared_rows_are_read_only_below_admins_of_every_organization(world):
    secret = "test-provider-credential-0123456789"
    provider = Provider(name="anthropic-direct", kind=Provider.Kind.ANTHROPIC)
    providers.set_credentials(actor=TEST_ACTOR, provider=provider, credentials={"api_key": secret})
    url = admin_url(Provider, "change", provider.pk)

    for client in (as_role(Role.FINANCE, world.acme), as_role(Role.PLATFORM_ADMIN, world.acme)):
        page = client.get(url)
        html = page.content.decode()
        assert page.status_code == 200 and 'name="_save"' not in html
        assert secret not in html and "credentials" in html
        assert client.post(url, {"name": "renamed"}).status_code == 403
    everywhere = as_role(Role.PLATFORM_ADMIN, None).get(url).content.decode()
    assert 'name="_save"' in everywhere and secret not in everywhere


def test_actions_touch_only_rows_the_user_may_change(world):
    admin_of_acme = as_role(Role.PLATFORM_ADMIN, world.acme)
    admin_of_acme.post(
        admin_url(VirtualKey, "changelist"),
        {
            "action": "revoke_selected",
            ACTION_CHECKBOX_NAME: [world.rival_key.pk, world.ml_key.pk],
            "apply": "yes",
            "reason": "test",
        },
    )
    assert VirtualKey.objects.get(pk=world.ml_key.pk).revoked_at is not None
    assert VirtualKey.objects.get(pk=world.rival_key.pk).revoked_at is None


# --- memberships and API tokens ---------------------------------------------------------------


def test_memberships_are_managed_by_platform_admins_of_every_organization(world, admin_client):
    org_admin = as_role(Role.PLATFORM_ADMIN, world.acme)
    assert org_admin.get(admin_url(Membership, "changelist")).status_code == 403
    newcomer = User.objects.create_user("newcomer")

    response = admin_client.post(
        admin_url(Membership, "add"),
        {
            "user": newcomer.pk,
            "role": Role.TEAM_LEAD,
            "organization": world.acme.pk,
            "teams": [world.backend.pk],
        },
    )

    assert response.status_code == 302
    membership = Membership.objects.get(user=newcomer)
    assert list(membership.teams.all()) == [world.backend]
    assert User.objects.get(pk=newcomer.pk).is_staff
    event = AuditEvent.objects.get(
        subject_type="governance.Membership", subject_id=str(membership.pk)
    )
    assert (event.after or {})["teams"] == [world.backend.pk] and event.actor == "user:admin"
    wrong = admin_client.post(
        admin_url(Membership, "add"),
        {"user": newcomer.pk, "role": Role.FINANCE, "teams": [world.ml.pk]},
    )
    assert wrong.status_code == 200 and "only team leads have teams" in wrong.content.decode()


def test_users_create_their_own_api_tokens_shown_once_and_revoke_them(world):
    finance_user = member("fin", Role.FINANCE, world.acme)
    other = tokens.create_token(actor=TEST_ACTOR, user=member("ops", Role.AUDITOR), name="ops")
    client = client_of(finance_user)

    response = client.post(admin_url(ApiToken, "add"), {"name": "bi-export"})

    html = response.content.decode()
    [secret] = set(re.findall(r"gwapi-[A-Za-z0-9_\-]{20,}", html))
    assert "no-store" in response["Cache-Control"]
    token = ApiToken.objects.get(name="bi-export")
    assert token.user == finance_user and tokens.authenticate(secret) == token
    mine = listed(client, ApiToken)
    assert "bi-export" in mine and "ops" not in mine and secret not in mine
    assert is_not_found(client.get(admin_url(ApiToken, "change", other.token.pk)))
    client.post(
        admin_url(ApiToken, "changelist"),
        {"action": "revoke_selected", ACTION_CHECKBOX_NAME: [token.pk, other.token.pk]},
    )
    assert tokens.authenticate(secret) is None
    assert ApiToken.objects.get(pk=other.token.pk).revoked_at is None


# --- telemetry's admin pages ----------------------------------------------------------------


def test_alert_channels_belong_to_finance_and_admins_of_their_organization(world):
    for org, name in ((world.acme, "acme-mail"), (world.globex, "globex-mail")):
        channel = AlertChannel(
            organization_id=org.pk, name=name, kind="email", target="ops@acme.dev"
        )
        channels.save_channel(channel, actor=TEST_ACTOR)
    finance = as_role(Role.FINANCE, world.acme)
    lead = as_role(Role.TEAM_LEAD, world.acme, world.backend)

    page = listed(finance, AlertChannel)
    assert "acme-mail" in page and "globex-mail" not in page
    add = finance.get(reverse("admin:telemetry_alertchannel_add")).content.decode()
    assert "globex" not in add
    refused = finance.post(
        reverse("admin:telemetry_alertchannel_add"),
        {"organization": world.globex.pk, "name": "x", "kind": "email", "target": "x@acme.dev"},
    )
    assert refused.status_code == 200 and not AlertChannel.objects.filter(name="x").exists()
    assert lead.get(reverse("admin:telemetry_alertchannel_changelist")).status_code == 403


def test_budget_period_records_follow_their_budgets(world):
    for budget in (world.key_budget, world.rival_budget):
        BudgetPeriodRecord.objects.create(
            budget_id=budget.pk,
            period_label="2026-01",
            period_start="2026-01-01T00:00Z",
            period_end="2026-02-01T00:00Z",
            spent_micros=1,
            limit_micros=budget.amount_micros,
        )
    lead = as_role(Role.TEAM_LEAD, world.acme, world.backend)

    page = lead.get(reverse("admin:telemetry_budgetperiodrecord_changelist")).content.decode()

    assert f"budget #{world.key_budget.pk}<" in page
    assert f"budget #{world.rival_budget.pk}<" not in page


def test_dead_letters_need_usage_of_every_organization(world, settings, tmp_path: Path):
    settings.GATEWAY_SPOOL_DIR = str(tmp_path)
    url = reverse("admin:telemetry_dead_letters")
    org_finance = as_role(Role.FINANCE, world.acme)
    auditor_everywhere = as_role(Role.AUDITOR, None)
    admin_everywhere = as_role(Role.PLATFORM_ADMIN, None)

    assert org_finance.get(url).status_code == 403
    assert auditor_everywhere.get(url).status_code == 200
    assert auditor_everywhere.post(url, {"action": "retry", "all": "1"}).status_code == 403
    assert admin_everywhere.post(url, {"action": "retry", "all": "1"}).status_code == 302
    index = org_finance.get(reverse("admin:index")).content.decode()
    assert "Usage dead letters" not in index and "Provider health" in index


def test_metrics_are_not_for_staff_with_one_organizations_role(world, client, settings):
    settings.GATEWAY_METRICS_TOKEN = "metrics-token-for-tests"
    client.force_login(member("lead", Role.TEAM_LEAD, world.acme, (world.backend,)))
    assert client.get("/metrics").status_code == 401
    client.force_login(member("root-auditor", Role.AUDITOR))
    assert client.get("/metrics").status_code == 200
