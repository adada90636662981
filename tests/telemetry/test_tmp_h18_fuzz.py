from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode

from governance.models import Role
from tests.governance.api.test_schemathesis import CHECKS, wsgi_app  # noqa: F401
from tests.telemetry.api_support import token_for, world
from tests.telemetry.usage_events import at, event, write
from telemetry import rollups

pytestmark = pytest.mark.django_db


def test_fuzz(wsgi_app):
    w = world()
    write(event(at("2026-11-02 10:00"), key=w.backend_key, cost=100), event(at("2026-12-05 10:00"), key=w.alice, cost=100, session_id="s"))
    rollups.run_rollups(settle_seconds=0)
    token = token_for(Role.PLATFORM_ADMIN, w.acme)
    schema = schemathesis.openapi.from_wsgi("/api/schema/?format=json", wsgi_app, headers={"Authorization": f"Bearer {token}"})
    schema = schema.include(path_regex=r"^/(v1/organizations|api/v1/(reports/|me$|me/))")
    failures = []
    ops = [r.ok() for r in schema.get_all_operations()]
    print(len(ops))
    for op in ops:
        for mode, n in ((GenerationMode.POSITIVE, 40), (GenerationMode.NEGATIVE, 20)):
            @given(case=op.as_strategy(generation_mode=mode))
            @settings(max_examples=n, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck), phases=[Phase.explicit, Phase.generate])
            def run(case: Any) -> None:
                headers = {"Authorization": f"Bearer {token}"}
                if op.path.startswith("/api/v1/me"):
                    headers = {"x-api-key": w.alice_secret}
                case.call_and_validate(headers=headers, checks=CHECKS)
            try:
                run()
            except (Exception, BaseExceptionGroup) as exc:
                failures.append(f"{op.label} {mode}: {exc}")
    assert not failures, "\n\n".join(failures)
