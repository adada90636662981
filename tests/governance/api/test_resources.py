"""Each resource's happy path: create, read, update, delete (or revoke), each write audited."""

from __future__ import annotations

from typing import Any

import pytest

from governance.models import AuditEvent, MCPServer, ModelRoute, Provider, Role
from governance.services import common
from tests.factories import TEST_ACTOR
from tests.governance.api.conftest import Api, make_user
from tests.roles import World

pytestmark = pytest.mark.django_db


def events(label: str, pk: Any) -> list[str]:
    rows = AuditEvent.objects.filter(subject_type=label, subject_id=str(pk)).order_by("id")
    return list(rows.values_list("verb", flat=True))


def crud(
    api: Api, collection: str, create: dict[str, Any], change: dict[str, Any], label: str
) -> dict[str, Any]:
    """Create, read, list, update and delete one object; each write leaves its audit event."""
    url = f"/api/v1/{collection}/"
    created = api.post(url, create)
    assert created.status_code == 201, created.json()
    body: dict[str, Any] = created.json()
    detail = f"{url}{body['id']}/"

    read = api.get(detail)
    assert read.status_code == 200 and read.headers["ETag"]
    assert body["id"] in [row["id"] for row in api.get(url).json()["results"]]
    updated = api.patch(detail, change)
    assert updated.status_code == 200, updated.json()
    for name, value in change.items():
        if name not in ("credentials", "target"):
            assert updated.json()[name] == value
    assert api.delete(detail).status_code == 204
    assert api.get(detail).status_code == 404
    assert events(label, body["id"])[:1] == ["created"]
    assert events(label, body["id"])[-2:] == ["updated", "deleted"]
    return body


def test_organizations(root: Api) -> None:
    crud(
        root,
        "organizations",
        {"name": "initech", "timezone": "Europe/Berlin"},
        {"display_name": "Initech"},
        "governance.Organization",
    )


def test_teams_and_projects(root: Api, world: World) -> None:
    for collection, label in (("teams", "Team"), ("projects", "Project")):
        crud(
            root,
            collection,
            {"organization": world.acme.pk, "name": "platform"},
            {"description": "shared"},
            f"governance.{label}",
        )


def test_budgets(root: Api, world: World) -> None:
    body = crud(
        root,
        "budgets",
        {"team": world.backend.pk, "amount_micros": 100_000_000, "period": "month"},
        {"amount_micros": 150_000_000},
        "governance.Budget",
    )
    assert body["organization"] == world.acme.pk and body["scope"] == "team"


def test_rate_limits_and_model_policies(root: Api, world: World) -> None:
    crud(
        root,
        "rate-limits",
        {"virtual_key": world.backend_key.pk, "requests_per_minute": 60},
        {"tokens_per_minute": 100_000},
        "governance.RateLimit",
    )
    crud(
        root,
        "model-policies",
        {"team": world.ml.pk, "allowed_patterns": ["claude-sonnet-*"]},
        {"denied_patterns": ["claude-opus-*"]},
        "governance.ModelPolicy",
    )


def test_providers_take_credentials_and_never_return_them(root: Api) -> None:
    secret = "test-provider-credential-value"
    created = root.post(
        "/api/v1/providers/",
        {"name": "anthropic", "kind": "anthropic", "credentials": {"api_key": secret}},
    )
    assert created.status_code == 201, created.json()
    body = created.json()
    assert body["credential_fields"] == ["api_key"] and "credentials" not in body

    detail = f"/api/v1/providers/{body['id']}/"
    listed = root.get("/api/v1/providers/")
    changed = root.patch(detail, {"credentials": {"auth_token": "another-secret"}})
    forgot = root.patch(detail, {"forget_credentials": ["api_key"]})
    for response in (created, root.get(detail), listed, changed, forgot):
        assert secret not in response.content.decode()
        assert "another-secret" not in response.content.decode()
    assert changed.json()["credential_fields"] == ["api_key", "auth_token"]
    assert forgot.json()["credential_fields"] == ["auth_token"]
    trail = AuditEvent.objects.filter(subject_type="governance.Provider")
    assert not any(secret in str(event.after) + event.note for event in trail)


def test_routes_and_deployments(root: Api) -> None:
    provider = Provider(name="mock", kind=Provider.Kind.MOCK)
    common.save_instance(provider, actor=TEST_ACTOR)
    route = crud(
        root,
        "routes",
        {"public_name": "claude-fast"},
        {"description": "the fast one"},
        "governance.ModelRoute",
    )
    assert route["deployments"] == []

    kept = ModelRoute(public_name="claude-kept")
    common.save_instance(kept, actor=TEST_ACTOR)
    deployment = crud(
        root,
        "deployments",
        {"route": kept.pk, "provider": provider.pk, "upstream_model": "mock-1"},
        {"weight": 3},
        "governance.Deployment",
    )
    assert deployment["route"] == kept.pk
    second = root.post(
        "/api/v1/deployments/", {"route": kept.pk, "provider": provider.pk, "position": 1}
    )
    listed = root.get(f"/api/v1/routes/{kept.pk}/").json()["deployments"]
    assert [row["id"] for row in listed] == [second.json()["id"]]


def test_prices(root: Api) -> None:
    crud(
        root,
        "prices",
        {
            "model_pattern": "claude-test-*",
            "effective_from": "2026-01-01T00:00:00Z",
            "input_per_mtok": 3_000_000,
            "output_per_mtok": 15_000_000,
            "cache_write_5m_per_mtok": 3_750_000,
            "cache_write_1h_per_mtok": 6_000_000,
            "cache_read_per_mtok": 300_000,
        },
        {"output_per_mtok": 16_000_000},
        "governance.ModelPrice",
    )


def test_mcp_servers_and_grants(root: Api, world: World) -> None:
    crud(
        root,
        "mcp-servers",
        {"name": "wiki", "url": "https://mcp.example.com/mcp"},
        {"enabled": False},
        "governance.MCPServer",
    )
    server = MCPServer(name="docs", url="https://docs.example.com/mcp")
    common.save_instance(server, actor=TEST_ACTOR)
    crud(
        root,
        "mcp-grants",
        {"server": server.pk, "team": world.backend.pk, "tool_patterns": ["search_*"]},
        {"tool_patterns": ["search_*", "read_*"]},
        "governance.MCPToolGrant",
    )


def test_alert_channels_keep_webhook_urls_write_only(root: Api, world: World) -> None:
    url = "https://hooks.slack.com/services/T000/B000/secret-token"
    body = crud(
        root,
        "alert-channels",
        {"organization": world.acme.pk, "name": "finance", "kind": "email", "target": "a@b.co"},
        {"enabled": False},
        "telemetry.AlertChannel",
    )
    assert body["target"] == "a@b.co"

    created = root.post(
        "/api/v1/alert-channels/",
        {"organization": world.acme.pk, "name": "slack", "kind": "slack", "target": url},
    )
    detail = f"/api/v1/alert-channels/{created.json()['id']}/"
    renamed = root.patch(detail, {"name": "slack-ops"})
    for response in (created, root.get(detail), root.get("/api/v1/alert-channels/"), renamed):
        assert "secret-token" not in response.content.decode()
    assert renamed.json()["target"] == "https://hooks.slack.com/…"
    assert renamed.json()["webhook_url_set"] is True


def test_memberships(root: Api, world: World) -> None:
    user = make_user()
    body = crud(
        root,
        "memberships",
        {"user": user.username, "organization": world.acme.pk, "role": "team_lead"},
        {"teams": [world.backend.pk]},
        "governance.Membership",
    )
    assert body["user"] == user.username and body["role"] == Role.TEAM_LEAD


def test_api_tokens_are_created_shown_once_and_revoked(acme_admin: Api) -> None:
    created = acme_admin.post("/api/v1/api-tokens/", {"name": "onboarding"})
    assert created.status_code == 201
    secret = created.json()["secret"]
    assert secret.startswith("gwapi-") and created.headers["Cache-Control"] == "no-store"

    detail = f"/api/v1/api-tokens/{created.json()['id']}/"
    assert "secret" not in acme_admin.get(detail).json()
    revoked = acme_admin.post(f"{detail}revoke/")
    assert revoked.status_code == 200 and revoked.json()["is_active"] is False
    assert Api(secret).get("/api/v1/keys/").status_code == 401
    assert events("governance.ApiToken", created.json()["id"]) == ["created", "updated"]


def test_audit_events_are_read_only_and_verifiable(root: Api, world: World) -> None:
    listed = root.get("/api/v1/audit-events/", {"subject_type": "governance.Team"})
    assert listed.status_code == 200
    rows = listed.json()["results"]
    assert rows and {row["subject_type"] for row in rows} == {"governance.Team"}
    assert rows == sorted(rows, key=lambda row: -row["id"])  # newest first
    event = rows[0]["id"]
    assert root.delete(f"/api/v1/audit-events/{event}/").status_code == 405
    assert root.patch(f"/api/v1/audit-events/{event}/", {"note": "x"}).status_code == 405

    report = root.get("/api/v1/audit-events/verify/")
    assert report.status_code == 200 and report.json()["ok"] is True


def test_alerts_are_read_only(root: Api, world: World) -> None:
    from telemetry.models import AlertEvent

    alert = AlertEvent.objects.create(
        budget_id=1,
        organization_id=world.acme.pk,
        period_label="2026-12",
        kind="threshold",
        threshold_percent=80,
        spent_micros=8,
        limit_micros=10,
        message="80 %",
    )

    listed = root.get("/api/v1/alerts/", {"organization": world.acme.pk})
    assert [row["id"] for row in listed.json()["results"]] == [alert.pk]
    assert root.delete(f"/api/v1/alerts/{alert.pk}/").status_code == 405
