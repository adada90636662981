"""Property-based run of the API against its own OpenAPI schema (Schemathesis), in process
through Django's WSGI handler, as a superuser with an API token: no answer is a server error,
and every answer has a documented status, content type, headers and body.

Every operation of /api/schema/ is run (the REST API and the Admin-API-compatible routes),
with valid and with invalid input; operations on one object are also run on an object that
exists, so updates and deletes get past the 404. Bounded: a few examples per operation, no
deadline, no example database, derandomized (the same examples on every run).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections, transaction
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from governance.actors import Actor
from governance.models import (
    AuditEvent,
    Deployment,
    MCPServer,
    MCPToolGrant,
    Membership,
    ModelPrice,
    ModelRoute,
    Provider,
    Role,
)
from governance.services import common, tokens
from telemetry.models import AlertChannel, AlertEvent
from tests import factories
from tests.governance.api.conftest import make_user
from tests.roles import World

pytestmark = pytest.mark.django_db
ACTOR = Actor.system("tests")
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
EXAMPLES = {GenerationMode.POSITIVE: 6, GenerationMode.NEGATIVE: 3}


@pytest.fixture
def wsgi_app() -> Iterator[Any]:
    """Django's WSGI handler, minus the handlers that close the database connection after
    each request (they would end the test's transaction; Django's test client drops them the
    same way)."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        yield get_wsgi_application()
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)


def _saved(obj: Any) -> int:
    common.save_instance(obj, actor=ACTOR)
    return int(obj.pk)


@pytest.fixture
def existing(world: World) -> dict[str, int]:
    """One object of each resource: {collection: id}."""
    provider = _saved(Provider(name="mock", kind=Provider.Kind.MOCK))
    route = _saved(ModelRoute(public_name="claude-test"))
    server = _saved(MCPServer(name="docs", url="https://mcp.example.com/mcp"))
    channel = AlertChannel(organization_id=world.acme.pk, name="ops", kind="email", target="a@b.co")
    channel.save()
    budget = factories.budget(owner=world.backend, amount_micros=5_000_000)
    alert = AlertEvent.objects.create(
        budget_id=budget.pk,
        organization_id=world.acme.pk,
        period_label="2026-12",
        kind=AlertEvent.Kind.THRESHOLD,
        threshold_percent=80,
        spent_micros=4_000_000,
        limit_micros=5_000_000,
        message="80 % of the backend budget",
    )
    member = Membership.objects.create(user=make_user(), organization=world.acme, role=Role.AUDITOR)
    return {
        "organizations": world.acme.pk,
        "teams": world.backend.pk,
        "projects": factories.project(organization=world.acme).pk,
        "keys": world.backend_key.pk,
        "budgets": budget.pk,
        "rate-limits": factories.rate_limit(owner=world.ml, requests_per_minute=60).pk,
        "model-policies": factories.model_policy(owner=world.ml).pk,
        "providers": provider,
        "routes": route,
        "deployments": _saved(Deployment(route_id=route, provider_id=provider)),
        "prices": ModelPrice.objects.order_by("id").values_list("pk", flat=True)[0],
        "mcp-servers": server,
        "mcp-grants": _saved(MCPToolGrant(server_id=server, team=world.backend)),
        "alert-channels": channel.pk,
        "alerts": alert.pk,
        "memberships": member.pk,
        "audit-events": AuditEvent.objects.order_by("id").values_list("pk", flat=True)[0],
    }


@pytest.fixture
def token(world: World) -> str:
    root = make_user(superuser=True)
    return tokens.create_token(actor=ACTOR, user=root, name="schemathesis").secret


@pytest.fixture
def api_schema(wsgi_app: Any, token: str) -> Any:
    headers = {"Authorization": f"Bearer {token}"}
    loaded = schemathesis.openapi.from_wsgi("/api/schema/?format=json", wsgi_app, headers=headers)
    return loaded.exclude(path_regex=r"^/api/(schema|docs)/")


def _strategy(operation: Any, mode: GenerationMode, existing: dict[str, int]) -> Any:
    strategy = operation.as_strategy(generation_mode=mode)
    collection = operation.path.removeprefix("/api/v1/").split("/")[0]
    if "{id}" in operation.path and collection in existing:
        on_existing = operation.as_strategy(
            generation_mode=mode, path_parameters={"id": existing[collection]}
        )
        strategy = st.one_of(on_existing, strategy)
    return strategy


def _run(operation: Any, mode: GenerationMode, existing: dict[str, int], token: str) -> None:
    @given(case=_strategy(operation, mode, existing))
    @settings(
        max_examples=EXAMPLES[mode],
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.explicit, Phase.generate],
    )
    def run(case: Any) -> None:
        # Each example starts from the same rows, and a failed statement (PostgreSQL aborts
        # the transaction) does not spill into the next example.
        savepoint = transaction.savepoint()
        try:
            case.call_and_validate(headers={"Authorization": f"Bearer {token}"}, checks=CHECKS)
        finally:
            transaction.savepoint_rollback(savepoint)

    run()


def test_every_operation_answers_as_the_schema_says(
    api_schema: Any, existing: dict[str, int], token: str
) -> None:
    failures: list[str] = []
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) > 50  # the schema describes the API, not nothing
    for operation in operations:
        for mode in EXAMPLES:
            try:
                _run(operation, mode, existing, token)
            except (Exception, BaseExceptionGroup) as exc:  # every operation is still tried
                failures.append(f"{operation.label} ({mode.value}): {exc}")
    assert not failures, "\n\n".join(failures)
