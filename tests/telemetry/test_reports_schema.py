"""Schemathesis over the reports, the Admin-API-compatible routes and self-service, with
credentials that reach their answers (an organization admin's API token, a virtual key) and
data to report on: no server error, and every answer as the schema documents it. The
whole-API run (tests/governance/api/test_schemathesis.py) uses a superuser across two
organizations, so these routes mostly answer it "name an organization"."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from governance.models import Role
from telemetry import rollups
from tests.telemetry.api_support import token_for, world
from tests.telemetry.usage_events import at, event, write

pytestmark = pytest.mark.django_db
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
EXAMPLES = {GenerationMode.POSITIVE: 25, GenerationMode.NEGATIVE: 10}
ROUTES = r"^/(v1/organizations/|api/v1/(reports/|me$|me/))"


@pytest.fixture
def wsgi_app() -> Iterator[Any]:
    """Django's WSGI handler without the signal handlers that close the connection after each
    request (they would end the test's transaction, as Django's test client knows)."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        yield get_wsgi_application()
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)


def _run(operation: Any, mode: GenerationMode, headers: dict[str, str]) -> None:
    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES[mode],
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.explicit, Phase.generate],
    )
    def run(case: Any) -> None:
        case.call_and_validate(headers=headers, checks=CHECKS)

    run()


def test_reports_admin_api_and_self_service_answer_as_the_schema_says(wsgi_app):
    w = world()
    write(
        event(at("2026-11-02 10:00"), key=w.backend_key, cost=1_000, session_id="s-1"),
        event(at("2026-11-03 11:00"), key=w.alice, cost=2_000, served_model="claude-opus-4-1"),
    )
    rollups.run_rollups(settle_seconds=0)
    token = token_for(Role.PLATFORM_ADMIN, w.acme)
    schema: Any = schemathesis.openapi.from_wsgi(
        "/api/schema/?format=json", wsgi_app, headers={"Authorization": f"Bearer {token}"}
    ).include(path_regex=ROUTES)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 11
    failures = []
    for operation in operations:
        headers = {"Authorization": f"Bearer {token}", "x-api-key": token}
        if operation.path.startswith("/api/v1/me"):
            headers = {"x-api-key": w.alice_secret}
        for mode in EXAMPLES:
            try:
                _run(operation, mode, headers)
            except (Exception, BaseExceptionGroup) as exc:  # every operation is still tried
                failures.append(f"{operation.label} ({mode.value}): {exc}")
    assert not failures, "\n\n".join(failures)
