"""A delete that cascades audits every row it removes, in the same transaction."""

from __future__ import annotations

from typing import Any

import pytest
from django.apps import apps
from django.contrib import admin
from django.db import models
from django.urls import reverse

from governance.admin.base import ServiceModelAdmin
from governance.models import (
    AuditEvent,
    Budget,
    Deployment,
    MCPServer,
    MCPToolGrant,
    ModelPolicy,
    ModelRoute,
    Provider,
    RateLimit,
    Team,
)
from governance.services import audit, common
from tests import factories

pytestmark = pytest.mark.django_db


def label(obj: models.Model) -> tuple[str, str]:
    return obj._meta.label, str(obj.pk)


def deleted_events(since: int) -> list[AuditEvent]:
    return list(
        AuditEvent.objects.filter(pk__gt=since, verb=AuditEvent.Verb.DELETED).order_by("id")
    )


def last_event_id() -> int:
    return AuditEvent.objects.order_by("-id").values_list("id", flat=True).first() or 0


@pytest.fixture
def team_with_children() -> dict[str, Any]:
    team = factories.team(name="doomed")
    server = MCPServer(name="github", url="http://mcp-github.internal/mcp")
    common.save_instance(server, actor=factories.TEST_ACTOR)
    grant = MCPToolGrant(server=server, team=team, tool_patterns=["search_*"])
    common.save_instance(grant, actor=factories.TEST_ACTOR)
    return {
        "team": team,
        "budgets": [
            factories.budget(owner=team, amount_micros=1_000_000, period="month"),
            factories.budget(owner=team, amount_micros=50_000, period="day"),
        ],
        "rate_limit": factories.rate_limit(owner=team, requests_per_minute=60),
        "model_policy": factories.model_policy(owner=team, allowed_patterns=["claude-*"]),
        "grant": grant,
    }


def test_deleting_a_team_audits_every_row_the_cascade_removes(team_with_children):
    team = team_with_children["team"]
    children = [
        *team_with_children["budgets"],
        team_with_children["rate_limit"],
        team_with_children["model_policy"],
        team_with_children["grant"],
    ]
    expected = {label(team), *(label(child) for child in children)}
    amounts = sorted(b.amount_micros for b in team_with_children["budgets"])
    team_pk = team.pk
    since = last_event_id()

    common.delete_instance(team, actor=factories.TEST_ACTOR, note="team disbanded")

    events = deleted_events(since)
    assert {(e.subject_type, e.subject_id) for e in events} == expected
    assert len(events) == len(expected)
    assert (events[0].subject_type, events[0].note) == ("governance.Team", "team disbanded")
    for event in events[1:]:
        assert event.note == f"team disbanded; cascade: deleted with governance.Team {team_pk}"
        assert event.before is not None and event.before["id"] == int(event.subject_id)
    budgets = [e.before or {} for e in events if e.subject_type == "governance.Budget"]
    assert sorted(b["amount_micros"] for b in budgets) == amounts
    assert not Budget.objects.exists()
    assert not RateLimit.objects.exists() and not ModelPolicy.objects.exists()
    assert not MCPToolGrant.objects.exists()
    assert audit.verify_chain().ok


def test_a_delete_that_fails_to_audit_removes_nothing(team_with_children, monkeypatch):
    team = team_with_children["team"]
    team_pk = team.pk
    since = last_event_id()
    calls = {"n": 0}
    record = audit.record

    def failing_record(**kwargs: Any) -> AuditEvent:
        calls["n"] += 1
        if calls["n"] == 3:  # a cascaded row's event
            raise RuntimeError("audit store unavailable")
        return record(**kwargs)

    monkeypatch.setattr(audit, "record", failing_record)

    with pytest.raises(RuntimeError, match="audit store unavailable"):
        common.delete_instance(team, actor=factories.TEST_ACTOR)

    assert Team.objects.filter(pk=team_pk).exists()
    assert Budget.objects.filter(team_id=team_pk).count() == 2
    assert deleted_events(since) == []


def test_deleting_a_route_in_the_admin_audits_its_deployments(admin_client):
    provider = Provider(name="anthropic-direct", kind=Provider.Kind.ANTHROPIC)
    common.save_instance(provider, actor=factories.TEST_ACTOR)
    route = ModelRoute(public_name="claude-sonnet-4-6")
    common.save_instance(route, actor=factories.TEST_ACTOR)
    deployments = []
    for model in ("claude-sonnet-4-6", "claude-sonnet-4-6-20260101"):
        deployment = Deployment(route=route, provider=provider, upstream_model=model)
        common.save_instance(deployment, actor=factories.TEST_ACTOR)
        deployments.append(deployment)
    since = last_event_id()

    url = reverse("admin:governance_modelroute_delete", args=[route.pk])
    assert admin_client.post(url, {"post": "yes"}).status_code == 302

    events = deleted_events(since)
    assert [(e.subject_type, e.subject_id) for e in events] == [
        label(route),
        *(label(d) for d in deployments),
    ]
    assert {e.actor for e in events} == {"user:admin"}
    assert not Deployment.objects.exists()


def test_every_relation_to_a_governance_model_cascades_or_protects():
    """A delete then only removes rows (each audited) or is refused: no SET_NULL / SET_DEFAULT
    rewrites a row without an event."""
    governance = apps.get_app_config("governance")
    allowed = {models.CASCADE, models.PROTECT, models.RESTRICT}
    for model in apps.get_models(include_auto_created=True):
        for field in model._meta.get_fields():
            remote = getattr(field, "remote_field", None)
            if not field.concrete or remote is None or field.many_to_many:
                continue
            if remote.model._meta.app_config is governance:
                assert remote.on_delete in allowed, f"{model._meta.label}.{field.name}"


def test_every_governance_admin_that_deletes_goes_through_the_service(rf, admin_user):
    request = rf.get("/")
    request.user = admin_user
    for model, model_admin in admin.site._registry.items():
        if model._meta.app_label != "governance":
            continue
        if model_admin.has_delete_permission(request):
            assert isinstance(model_admin, ServiceModelAdmin), model._meta.label


def test_rows_django_deletes_without_loading_are_audited_too(team_with_children):
    """Budgets and grants have no relations of their own, so Django deletes them with one
    statement per owner ("fast delete") without loading them: they are loaded to be audited,
    and the delete is pinned to exactly the rows loaded."""
    collector, removed = common._collect(team_with_children["team"])

    fast = {qs.model for qs in collector.fast_deletes}
    assert {Budget, MCPToolGrant} <= fast
    audited = {(row.subject_type, row.subject_id) for row in removed}
    assert {label(b) for b in team_with_children["budgets"]} <= audited
    pinned_pks = {pk for qs in collector.fast_deletes for pk in qs.values_list("pk", flat=True)}
    assert {b.pk for b in team_with_children["budgets"]} <= pinned_pks
