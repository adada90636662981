from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal
from html.parser import HTMLParser
from typing import Any

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.urls import reverse
from django.utils import timezone

from governance import crypto, policy
from governance.models import (
    AuditEvent,
    Budget,
    Deployment,
    MCPServer,
    MCPToolGrant,
    ModelPolicy,
    ModelPrice,
    ModelRoute,
    Organization,
    Project,
    Provider,
    RateLimit,
    Team,
    VirtualKey,
)
from governance.services import common, keys, providers
from tests import factories

pytestmark = pytest.mark.django_db

PROVIDER_SECRET = "test-provider-credential-0123456789"


# --- helpers ----------------------------------------------------------------------------------


class _FormFields(HTMLParser):
    """Collects what a browser would submit from the admin's main form."""

    def __init__(self) -> None:
        super().__init__()
        self.data: list[tuple[str, str]] = []
        self._in_form = False
        self._select: str | None = None
        self._select_multiple = False
        self._options: list[tuple[str, bool]] = []
        self._textarea: str | None = None
        self._text = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form" and a.get("id", "").endswith("_form"):
            self._in_form = True
        if not self._in_form or "__prefix__" in a.get("name", ""):
            return
        if tag == "input" and a.get("name"):
            kind = a.get("type", "text")
            if kind in ("submit", "button", "file"):
                return
            if kind in ("checkbox", "radio") and "checked" not in a:
                return
            self.data.append((a["name"], a.get("value", "on" if kind == "checkbox" else "")))
        elif tag == "select" and a.get("name"):
            self._select, self._select_multiple, self._options = a["name"], "multiple" in a, []
        elif tag == "option" and self._select is not None:
            self._options.append((a.get("value", ""), "selected" in a))
        elif tag == "textarea" and a.get("name"):
            self._textarea, self._text = a["name"], ""

    def handle_data(self, data: str) -> None:
        if self._textarea is not None:
            self._text += data

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._in_form = False
        elif tag == "select" and self._select is not None:
            chosen = [value for value, selected in self._options if selected]
            if not chosen and not self._select_multiple and self._options:
                chosen = [self._options[0][0]]
            self.data.extend((self._select, value) for value in chosen)
            self._select = None
        elif tag == "textarea" and self._textarea is not None:
            self.data.append((self._textarea, self._text.removeprefix("\n")))
            self._textarea = None


def form_data(html: str, **overrides: Any) -> dict[str, Any]:
    """The admin form's current values, as a browser would post them, with overrides."""
    parser = _FormFields()
    parser.feed(html)
    data: dict[str, Any] = {}
    for name, value in parser.data:
        if name in data:
            previous = data[name]
            data[name] = [*previous, value] if isinstance(previous, list) else [previous, value]
        else:
            data[name] = value
    data.update(overrides)
    data["_save"] = "Save"
    return data


def admin_url(model: type[Any], view: str, *args: Any) -> str:
    return reverse(f"admin:governance_{model._meta.model_name}_{view}", args=args)


def events_for(obj: Any) -> list[AuditEvent]:
    return list(
        AuditEvent.objects.filter(subject_type=obj._meta.label, subject_id=str(obj.pk)).order_by(
            "id"
        )
    )


@pytest.fixture
def world() -> dict[str, Any]:
    """One row of every governance model, built through the services."""
    org = factories.organization(name="acme")
    team = factories.team(organization=org, name="backend")
    project = factories.project(organization=org, name="payments")
    issued = factories.issued_key(team=team, name="vk-backend")
    sub = factories.virtual_key(parent=issued.key, name="alice", owner="alice@acme.dev")
    provider = Provider(name="anthropic-direct", kind=Provider.Kind.ANTHROPIC)
    providers.set_credentials(
        actor=factories.TEST_ACTOR, provider=provider, credentials={"api_key": PROVIDER_SECRET}
    )
    route = ModelRoute(public_name="claude-sonnet-4-6")
    common.save_instance(route, actor=factories.TEST_ACTOR)
    deployment = Deployment(route=route, provider=provider, upstream_model="claude-sonnet-4-6")
    common.save_instance(deployment, actor=factories.TEST_ACTOR)
    server = MCPServer(name="github", url="http://mcp-github.internal/mcp")
    common.save_instance(server, actor=factories.TEST_ACTOR)
    grant = MCPToolGrant(server=server, team=team, tool_patterns=["search_*"])
    common.save_instance(grant, actor=factories.TEST_ACTOR)
    return {
        "organization": org,
        "team": team,
        "project": project,
        "key": issued.key,
        "secret": issued.secret,
        "sub_key": sub,
        "budget": factories.budget(owner=team, amount_micros=3_000_000_000),
        "rate_limit": factories.rate_limit(owner=team, requests_per_minute=120),
        "model_policy": factories.model_policy(owner=team, allowed_patterns=["claude-*"]),
        "provider": provider,
        "route": route,
        "price": ModelPrice.objects.order_by("id").first(),
        "server": server,
        "grant": grant,
        "event": AuditEvent.objects.order_by("-id").first(),
    }


EDITABLE = [
    Organization,
    Team,
    Project,
    VirtualKey,
    Budget,
    RateLimit,
    ModelPolicy,
    Provider,
    ModelRoute,
    ModelPrice,
    MCPServer,
    MCPToolGrant,
]
WORLD_NAME = {
    Organization: "organization",
    Team: "team",
    Project: "project",
    VirtualKey: "key",
    Budget: "budget",
    RateLimit: "rate_limit",
    ModelPolicy: "model_policy",
    Provider: "provider",
    ModelRoute: "route",
    ModelPrice: "price",
    MCPServer: "server",
    MCPToolGrant: "grant",
}


def assert_no_secrets(html: str, world: dict[str, Any]) -> None:
    key: VirtualKey = VirtualKey.objects.get(pk=world["key"].pk)
    provider = Provider.objects.get(pk=world["provider"].pk)
    assert world["secret"] not in html
    assert key.lookup_hash not in html
    assert PROVIDER_SECRET not in html
    assert provider.credentials_encrypted not in html


# --- every page renders -----------------------------------------------------------------------


@pytest.mark.parametrize("model", EDITABLE, ids=lambda m: m.__name__)
def test_changelist_add_and_change_pages_render(admin_client, world, model):
    obj = world[WORLD_NAME[model]]
    for url in (
        admin_url(model, "changelist"),
        admin_url(model, "add"),
        admin_url(model, "change", obj.pk),
    ):
        response = admin_client.get(url)
        assert response.status_code == 200, url
        assert_no_secrets(response.content.decode(), world)


@pytest.mark.parametrize("model", EDITABLE, ids=lambda m: m.__name__)
def test_saving_an_unchanged_change_form_works_and_records_nothing(admin_client, world, model):
    obj = world[WORLD_NAME[model]]
    url = admin_url(model, "change", obj.pk)
    events_before = AuditEvent.objects.count()
    response = admin_client.post(url, form_data(admin_client.get(url).content.decode()))
    assert response.status_code == 302, response.content.decode()[:3000]
    assert AuditEvent.objects.count() == events_before


def test_changelist_search_and_filters_render(admin_client, world):
    for url in (
        admin_url(VirtualKey, "changelist") + "?q=alice",
        admin_url(VirtualKey, "changelist") + "?state=revoked",
        admin_url(Budget, "changelist") + "?period__exact=month",
        admin_url(AuditEvent, "changelist") + "?verb__exact=key_created",
    ):
        assert admin_client.get(url).status_code == 200, url


def test_autocomplete_finds_teams_for_the_key_form(admin_client, world):
    response = admin_client.get(
        reverse("admin:autocomplete"),
        {
            "term": "back",
            "app_label": "governance",
            "model_name": "virtualkey",
            "field_name": "team",
        },
    )
    assert response.status_code == 200
    assert "backend" in response.content.decode()


# --- every write is audited -------------------------------------------------------------------


def test_admin_save_is_audited_with_the_user_as_actor(admin_client, admin_user):
    response = admin_client.post(
        admin_url(Organization, "add"),
        {
            "name": "globex",
            "display_name": "Globex",
            "timezone": "Europe/Berlin",
            "admission_fail_mode": "closed",
            "unpriced_models": "refuse",
            "subscription_traffic": "refuse",
            "log_retention_days": "30",
            "teams-TOTAL_FORMS": "1",
            "teams-INITIAL_FORMS": "0",
            "teams-0-name": "ml",
            "projects-TOTAL_FORMS": "0",
            "projects-INITIAL_FORMS": "0",
            "budgets-TOTAL_FORMS": "1",
            "budgets-INITIAL_FORMS": "0",
            "budgets-0-amount_usd": "20000",
            "budgets-0-period": "month",
            "budgets-0-alert_thresholds": "50, 80, 100",
            "budgets-0-on_exhaust": "block",
            "idp_group_roles-TOTAL_FORMS": "0",
            "idp_group_roles-INITIAL_FORMS": "0",
        },
    )
    assert response.status_code == 302, response.content.decode()[:3000]
    org = Organization.objects.get(name="globex")
    team = Team.objects.get(organization=org, name="ml")
    budget = Budget.objects.get(organization=org)
    assert budget.amount_micros == 20_000_000_000 and budget.team is None
    for obj in (org, team, budget):
        [event] = events_for(obj)
        assert event.verb == AuditEvent.Verb.CREATED
        assert event.actor == f"user:{admin_user.username}"
        assert event.actor_user_id == admin_user.pk


def test_admin_delete_goes_through_the_service(admin_client, world):
    grant = world["grant"]
    response = admin_client.post(admin_url(MCPToolGrant, "delete", grant.pk), {"post": "yes"})
    assert response.status_code == 302
    assert not MCPToolGrant.objects.filter(pk=grant.pk).exists()
    [*_, event] = events_for(grant)
    assert event.verb == AuditEvent.Verb.DELETED and event.actor == "user:admin"


def test_bulk_delete_action_is_audited_per_row(admin_client, world):
    price = world["price"]
    response = admin_client.post(
        admin_url(ModelPrice, "changelist"),
        {"action": "delete_selected", ACTION_CHECKBOX_NAME: [price.pk], "post": "yes"},
    )
    assert response.status_code == 302
    assert not ModelPrice.objects.filter(pk=price.pk).exists()
    assert events_for(price)[-1].verb == AuditEvent.Verb.DELETED


# --- keys: created and shown once -------------------------------------------------------------


def test_key_creation_shows_the_secret_once_and_stores_only_its_hash(admin_client, world):
    team = world["team"]
    response = admin_client.post(
        admin_url(VirtualKey, "add"),
        {"name": "vk-new", "team": team.pk, "owner": "bob@acme.dev", "log_content": ""},
    )
    assert response.status_code == 200
    html = response.content.decode()
    [secret] = set(re.findall(r"sk-gw-[A-Za-z0-9_\-]{20,}", html))
    assert "it will not be shown again" in html
    assert "export ANTHROPIC_BASE_URL=http://testserver/anthropic" in html
    assert f"export ANTHROPIC_API_KEY={secret}" in html
    assert "no-store" in response["Cache-Control"]

    key = VirtualKey.objects.get(name="vk-new")
    assert key.organization == team.organization and key.owner == "bob@acme.dev"
    assert key.lookup_hash == keys.hash_secret(secret)
    assert key.prefix == secret[: keys.VISIBLE_PREFIX_LENGTH]
    loaded = policy.load_policy(keys.hash_secret(secret))
    assert loaded is not None and loaded.key_id == key.pk and loaded.team_name == "backend"
    [event] = events_for(key)
    assert event.verb == AuditEvent.Verb.KEY_CREATED and event.actor == "user:admin"

    # Nowhere else: not in the session, cookies or messages, nor on any later page.
    assert secret not in str(dict(admin_client.session))
    assert secret not in str(response.cookies)
    for url in (
        admin_url(VirtualKey, "change", key.pk),
        admin_url(VirtualKey, "changelist"),
        admin_url(Team, "change", team.pk),
        admin_url(AuditEvent, "change", event.pk),
        reverse("admin:index"),
    ):
        later = admin_client.get(url).content.decode()
        assert secret not in later and key.lookup_hash not in later


def test_sub_key_is_created_from_the_parent_link(admin_client, world):
    parent = world["key"]
    page = admin_client.get(admin_url(VirtualKey, "change", parent.pk)).content.decode()
    assert "Add a sub-key" in page and "alice" in page  # the sub-key list
    response = admin_client.post(admin_url(VirtualKey, "add"), {"name": "bob", "parent": parent.pk})
    assert response.status_code == 200
    sub = VirtualKey.objects.get(parent=parent, name="bob")
    assert sub.team == parent.team and sub.organization == parent.organization


def test_service_refusal_on_create_is_a_form_error_not_a_500(admin_client, world):
    response = admin_client.post(
        admin_url(VirtualKey, "add"), {"name": "too-deep", "parent": world["sub_key"].pk}
    )
    assert response.status_code == 200
    html = response.content.decode()
    assert "a sub-key cannot have sub-keys of its own" in html
    assert "too-deep" in html  # the user's input is kept
    assert not VirtualKey.objects.filter(name="too-deep").exists()
    assert not re.search(r"sk-gw-[A-Za-z0-9_\-]{20,}", html)


def test_key_from_another_organization_team_is_a_form_error(admin_client, world):
    other = factories.organization(name="other")
    response = admin_client.post(
        admin_url(VirtualKey, "add"),
        {"name": "cross", "organization": other.pk, "team": world["team"].pk},
    )
    assert response.status_code == 200
    assert "the team belongs to another organization" in response.content.decode()
    assert not VirtualKey.objects.filter(name="cross").exists()


def test_key_change_page_never_shows_hashes(admin_client, world):
    key = world["key"]
    keys.rotate_key(actor=factories.TEST_ACTOR, key=key, grace=dt.timedelta(hours=1))
    key.refresh_from_db()
    html = admin_client.get(admin_url(VirtualKey, "change", key.pk)).content.decode()
    assert key.prefix in html
    assert key.lookup_hash not in html and key.previous_lookup_hash not in html
    assert "old secret valid until" in html


def test_editing_a_key_keeps_its_secret(admin_client, world):
    key, secret = world["key"], world["secret"]
    url = admin_url(VirtualKey, "change", key.pk)
    data = form_data(admin_client.get(url).content.decode(), owner="ops@acme.dev")
    assert admin_client.post(url, data).status_code == 302
    key.refresh_from_db()
    assert key.owner == "ops@acme.dev"
    assert policy.load_policy(keys.hash_secret(secret)) is not None
    assert events_for(key)[-1].actor == "user:admin"


# --- keys: revoke and rotate actions ----------------------------------------------------------


def test_revoke_action_asks_then_revokes_with_sub_keys(admin_client, world):
    key, sub = world["key"], world["sub_key"]
    url = admin_url(VirtualKey, "changelist")
    confirm = admin_client.post(
        url, {"action": "revoke_selected", ACTION_CHECKBOX_NAME: [key.pk], "index": "0"}
    )
    assert confirm.status_code == 200 and "cannot be undone" in confirm.content.decode()
    assert VirtualKey.objects.get(pk=key.pk).revoked_at is None

    response = admin_client.post(
        url,
        {
            "action": "revoke_selected",
            ACTION_CHECKBOX_NAME: [key.pk],
            "apply": "yes",
            "reason": "laptop stolen",
        },
    )
    assert response.status_code == 302
    for obj in (key, sub):
        obj.refresh_from_db()
        assert obj.revoked_at is not None
        event = events_for(obj)[-1]
        assert event.verb == AuditEvent.Verb.KEY_REVOKED and event.actor == "user:admin"
    assert events_for(key)[-1].note == "laptop stolen"
    assert policy.load_policy(keys.hash_secret(world["secret"])) is None


def test_rotate_action_with_grace_shows_new_secret_once(admin_client, world):
    key, old_secret = world["key"], world["secret"]
    url = admin_url(VirtualKey, "changelist")
    confirm = admin_client.post(
        url, {"action": "rotate_selected", ACTION_CHECKBOX_NAME: [key.pk], "index": "0"}
    )
    assert confirm.status_code == 200 and "grace_hours" in confirm.content.decode()

    response = admin_client.post(
        url,
        {
            "action": "rotate_selected",
            ACTION_CHECKBOX_NAME: [key.pk],
            "apply": "yes",
            "grace_hours": "24",
        },
    )
    assert response.status_code == 200
    html = response.content.decode()
    [new_secret] = set(re.findall(r"sk-gw-[A-Za-z0-9_\-]{20,}", html))
    assert new_secret != old_secret and old_secret not in html
    assert "it will not be shown again" in html and "keep working until" in html
    assert "no-store" in response["Cache-Control"]
    assert f"export ANTHROPIC_API_KEY={new_secret}" in html

    key.refresh_from_db()
    assert key.lookup_hash == keys.hash_secret(new_secret)
    assert key.previous_valid_until > timezone.now() + dt.timedelta(hours=23)
    assert policy.load_policy(keys.hash_secret(new_secret)) is not None
    assert policy.load_policy(keys.hash_secret(old_secret)) is not None  # grace period
    event = events_for(key)[-1]
    assert event.verb == AuditEvent.Verb.KEY_ROTATED and event.actor == "user:admin"
    assert (
        new_secret not in admin_client.get(admin_url(VirtualKey, "change", key.pk)).content.decode()
    )


def test_rotate_now_stops_the_old_secret(admin_client, world):
    key, old_secret = world["key"], world["secret"]
    response = admin_client.post(
        admin_url(VirtualKey, "changelist"),
        {
            "action": "rotate_selected",
            ACTION_CHECKBOX_NAME: [key.pk],
            "apply": "yes",
            "grace_hours": "0",
        },
    )
    assert response.status_code == 200
    assert policy.load_policy(keys.hash_secret(old_secret)) is None


def test_rotating_a_revoked_key_is_refused_politely(admin_client, world):
    key = world["key"]
    keys.revoke_key(actor=factories.TEST_ACTOR, key=key)
    response = admin_client.post(
        admin_url(VirtualKey, "changelist"),
        {
            "action": "rotate_selected",
            ACTION_CHECKBOX_NAME: [key.pk],
            "apply": "yes",
            "grace_hours": "0",
        },
        follow=True,
    )
    assert response.status_code == 200
    assert "a revoked key cannot be rotated" in response.content.decode()


# --- budgets in dollars -----------------------------------------------------------------------


def _budget_post(**fields: Any) -> dict[str, Any]:
    data = {
        "amount_usd": "1500.50",
        "period": "month",
        "alert_thresholds": "50, 80, 100",
        "on_exhaust": "block",
    }
    data.update({k: v for k, v in fields.items() if v is not None})
    return data


def test_budget_entered_in_dollars_is_stored_in_micros(admin_client, world):
    response = admin_client.post(
        admin_url(Budget, "add"),
        _budget_post(project=world["project"].pk, model_patterns="claude-opus-*, claude-sonnet-*"),
    )
    assert response.status_code == 302, response.content.decode()[:3000]
    budget = Budget.objects.get(project=world["project"])
    assert budget.amount_micros == 1_500_500_000
    assert budget.organization == world["organization"]  # taken from the owner
    assert budget.model_patterns == ["claude-opus-*", "claude-sonnet-*"]
    assert events_for(budget)[0].actor == "user:admin"

    listing = admin_client.get(admin_url(Budget, "changelist")).content.decode()
    assert "$1,500.50" in listing and "project payments" in listing
    assert "team backend" in listing and "$3,000.00" in listing
    change = admin_client.get(admin_url(Budget, "change", budget.pk)).content.decode()
    assert 'value="1500.50"' in change


def test_budget_with_two_owners_is_a_form_error(admin_client, world):
    response = admin_client.post(
        admin_url(Budget, "add"), _budget_post(team=world["team"].pk, virtual_key=world["key"].pk)
    )
    assert response.status_code == 200
    assert "a budget belongs to one team, project or key" in response.content.decode()
    assert not Budget.objects.filter(virtual_key=world["key"]).exists()


def test_downgrade_without_model_is_a_form_error(admin_client, world):
    response = admin_client.post(
        admin_url(Budget, "add"), _budget_post(team=world["team"].pk, on_exhaust="downgrade")
    )
    assert response.status_code == 200
    assert "a downgrade budget needs the model to use" in response.content.decode()


def test_budget_with_sub_micro_cents_is_a_form_error(admin_client, world):
    response = admin_client.post(
        admin_url(Budget, "add"), _budget_post(team=world["team"].pk, amount_usd="1.0000001")
    )
    assert response.status_code == 200
    assert "errorlist" in response.content.decode()


def test_team_page_edits_budgets_inline(admin_client, world):
    team, budget = world["team"], world["budget"]
    url = admin_url(Team, "change", team.pk)
    html = admin_client.get(url).content.decode()
    assert "vk-backend" in html and world["key"].prefix in html  # the read-only key list
    assert 'value="3000.00"' in html
    data = form_data(
        html,
        **{
            "budgets-0-amount_usd": "2500",
            "budgets-TOTAL_FORMS": "2",
            "budgets-1-amount_usd": "300",
            "budgets-1-period": "month",
            "budgets-1-model_patterns": "claude-opus-*",
            "budgets-1-alert_thresholds": "80",
            "budgets-1-on_exhaust": "downgrade",
            "budgets-1-downgrade_model": "claude-sonnet-4-6",
        },
    )
    response = admin_client.post(url, data)
    assert response.status_code == 302, response.content.decode()[:3000]
    budget.refresh_from_db()
    assert budget.amount_micros == 2_500_000_000
    tier = Budget.objects.get(team=team, model_patterns=["claude-opus-*"])
    assert tier.organization == team.organization and tier.amount_micros == 300_000_000
    assert events_for(budget)[-1].actor == "user:admin"
    assert events_for(tier)[0].verb == AuditEvent.Verb.CREATED


def test_organization_page_lists_only_organization_wide_budgets(admin_client, world):
    org = world["organization"]
    factories.budget(owner=org, amount_micros=20_000_000_000)
    html = admin_client.get(admin_url(Organization, "change", org.pk)).content.decode()
    assert 'value="20000.00"' in html and 'value="3000.00"' not in html
    assert "backend" in html and "payments" in html  # its teams and projects


def test_inline_budget_error_is_shown_on_the_team_page(admin_client, world):
    team = world["team"]
    url = admin_url(Team, "change", team.pk)
    data = form_data(
        admin_client.get(url).content.decode(), **{"budgets-0-on_exhaust": "downgrade"}
    )
    response = admin_client.post(url, data)
    assert response.status_code == 200
    assert "a downgrade budget needs the model to use" in response.content.decode()


def test_model_price_is_shown_and_entered_per_million_tokens(admin_client, world):
    price = world["price"]
    listing = admin_client.get(admin_url(ModelPrice, "changelist")).content.decode()
    assert "$/MTok" in listing
    url = admin_url(ModelPrice, "change", price.pk)
    data = form_data(admin_client.get(url).content.decode(), input_usd="3.75")
    assert admin_client.post(url, data).status_code == 302
    price.refresh_from_db()
    assert price.input_per_mtok == 3_750_000
    after = events_for(price)[-1].after
    assert after is not None and after["input_per_mtok"] == 3_750_000


# --- providers: write-only credentials --------------------------------------------------------


def test_provider_credentials_are_stored_encrypted_and_never_shown(admin_client):
    response = admin_client.post(
        admin_url(Provider, "add"),
        {
            "name": "bedrock-us",
            "kind": "bedrock",
            "region": "us-east-1",
            "enabled": "on",
            "settings": "{}",
            "access_key_id": "TESTACCESSKEYID0001",
            "secret_access_key": "test-secret-access-key/0123456789abcdef",
        },
    )
    assert response.status_code == 302, response.content.decode()[:3000]
    provider = Provider.objects.get(name="bedrock-us")
    assert "test-secret-access-key" not in provider.credentials_encrypted
    assert crypto.decrypt_credentials(provider.credentials_encrypted) == {
        "access_key_id": "TESTACCESSKEYID0001",
        "secret_access_key": "test-secret-access-key/0123456789abcdef",
    }
    url = admin_url(Provider, "change", provider.pk)
    html = admin_client.get(url).content.decode()
    assert "access_key_id, secret_access_key" in html  # which fields are set
    for leaked in ("TESTACCESSKEYID0001", "test-secret-access-key", provider.credentials_encrypted):
        assert leaked not in html
    for event in events_for(provider):
        assert "test-secret-access-key" not in str(event.before) + str(event.after) + event.note
        assert event.actor == "user:admin"

    # Blank fields keep the stored values; a filled one replaces just that field.
    data = form_data(html, region="us-west-2", access_key_id="TESTACCESSKEYID0002")
    assert admin_client.post(url, data).status_code == 302
    provider.refresh_from_db()
    assert provider.region == "us-west-2"
    assert providers_credentials(provider) == {
        "access_key_id": "TESTACCESSKEYID0002",
        "secret_access_key": "test-secret-access-key/0123456789abcdef",
    }


def providers_credentials(provider: Provider) -> dict[str, str]:
    return crypto.decrypt_credentials(provider.credentials_encrypted)


def test_provider_credentials_can_be_forgotten(admin_client, world):
    provider = world["provider"]
    url = admin_url(Provider, "change", provider.pk)
    data = form_data(admin_client.get(url).content.decode(), forget_credentials=["api_key"])
    assert admin_client.post(url, data).status_code == 302
    provider.refresh_from_db()
    assert provider.credentials_encrypted == ""
    assert "credentials set: none" in events_for(provider)[-1].note


def test_provider_form_error_does_not_echo_the_secret(admin_client):
    response = admin_client.post(
        admin_url(Provider, "add"),
        {"name": "bad name!", "kind": "anthropic", "settings": "{}", "api_key": PROVIDER_SECRET},
    )
    assert response.status_code == 200
    html = response.content.decode()
    assert "errorlist" in html and PROVIDER_SECRET not in html


# --- the audit log ----------------------------------------------------------------------------


def test_audit_log_is_read_only_and_readable(admin_client, world):
    budget = world["budget"]
    url = admin_url(Budget, "change", budget.pk)
    data = form_data(admin_client.get(url).content.decode(), amount_usd="4000")
    assert admin_client.post(url, data).status_code == 302
    event = events_for(budget)[-1]

    html = admin_client.get(admin_url(AuditEvent, "change", event.pk)).content.decode()
    assert "amount_micros" in html and "3000000000" in html and "4000000000" in html
    assert "<pre" in html
    assert admin_client.get(admin_url(AuditEvent, "add")).status_code == 403
    assert admin_client.post(admin_url(AuditEvent, "change", event.pk), {}).status_code == 403
    assert (
        admin_client.post(admin_url(AuditEvent, "delete", event.pk), {"post": "yes"}).status_code
        == 403
    )
    assert AuditEvent.objects.filter(pk=event.pk).exists()
    listing = admin_client.get(admin_url(AuditEvent, "changelist")).content.decode()
    assert "delete_selected" not in listing
    assert_no_secrets(listing, world)


def test_audit_pages_of_secret_bearing_rows_show_no_secrets(admin_client, world):
    for obj in (world["key"], world["provider"]):
        for event in events_for(obj):
            html = admin_client.get(admin_url(AuditEvent, "change", event.pk)).content.decode()
            assert_no_secrets(html, world)


def test_money_helpers_render_readably():
    from governance.forms import usd_amount

    assert usd_amount(1_500_500_000) == Decimal("1500.50")
    assert str(usd_amount(0)) == "0.00"
    assert str(usd_amount(150)) == "0.00015"
