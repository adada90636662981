"""A team lead's /logs in a real headless Chromium: only their team's requests, and another
team's request by its URL is not found. Skipped like test_browser.py without Chromium."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from django.utils import timezone

from governance.models import Role
from tests import factories
from tests.roles import PASSWORD, member
from tests.telemetry import test_browser as shared
from tests.telemetry.usage_events import event, write

pytestmark = shared.pytestmark
# The browser fixtures of test_browser.py (Chromium by path, JS errors collected).
browser = shared.browser
page = shared.page
js_errors = shared.js_errors


@pytest.fixture
def seeded(live_server: Any) -> dict[str, Any]:
    acme = factories.organization(name="acme")
    backend = factories.team(organization=acme, name="backend")
    ml = factories.team(organization=acme, name="ml")
    globex = factories.organization(name="globex")
    keys = {
        "backend": factories.virtual_key(team=backend, name="vk-backend"),
        "ml": factories.virtual_key(team=ml, name="vk-ml"),
        "rival": factories.virtual_key(organization=globex, name="vk-rival"),
    }
    now = timezone.now()
    write(
        *(
            event(now - dt.timedelta(minutes=i + 1), key=key, request_id=f"req-{name}-{i}")
            for i in range(3)
            for name, key in keys.items()
        )
    )
    member("lead", Role.TEAM_LEAD, acme, (backend,))
    return keys


def test_team_lead_sees_only_their_teams_requests_in_the_log(live_server, seeded, page, js_errors):
    page.goto(f"{live_server.url}/logs")
    assert "/admin/login/" in page.url
    page.fill("#id_username", "lead")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url(f"{live_server.url}/logs")

    rows = page.locator("#log-rows tr")
    assert rows.count() == 3
    text = page.locator("#log-rows").inner_text()
    assert "vk-backend" in text and "vk-ml" not in text and "vk-rival" not in text
    options = page.eval_on_selector_all("select option", "os => os.map(o => o.textContent)")
    assert not any("globex" in o or "vk-ml" in o or "acme/ml" in o for o in options)
    shared.ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(shared.ARTIFACTS / "request-log-team-lead.png"), full_page=False)

    response = page.goto(f"{live_server.url}/logs/req-ml-0")
    assert response is not None and response.status == 404
    js_errors[:] = [e for e in js_errors if not e.startswith("404 ")]
    assert js_errors == []
