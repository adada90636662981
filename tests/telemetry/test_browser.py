"""The dashboards in a real headless Chromium (Debian's `chromium`, driven by Playwright).

The browser logs in through the admin login form, watches /logs pick up a new request by
itself, and renders the spend dashboard; screenshots land in test-artifacts/.
Playwright's own browser downloads are never used: the system binary is launched by path.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connections
from django.utils import timezone

from telemetry import rollups
from telemetry.models import UsageRecord
from tests import factories
from tests.telemetry.usage_events import event, write

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(settings.BASE_DIR) / "test-artifacts"
PASSWORD = "browser-test-password-1"

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
pytestmark = [
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="Chromium is not installed at /usr/bin/chromium (apt-get install -y chromium)",
    ),
    pytest.mark.django_db(transaction=True),
]


def _in_thread(work: Callable[[], object]) -> None:
    """Run ORM work while the browser is open. Playwright's sync API runs the test in a
    greenlet with an event loop, where Django refuses ORM calls (and a connection opened there
    would belong to the greenlet and never be closed): a plain thread has neither problem."""

    def run() -> None:
        try:
            work()
        finally:
            connections.close_all()

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(timeout=30)


@pytest.fixture
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def js_errors() -> list[str]:
    return []


@pytest.fixture
def page(browser: Any, js_errors: list[str]) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1360, "height": 900}, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(10_000)
    page.on("pageerror", lambda error: js_errors.append(str(error)))
    # Failed requests are told apart by URL: the admin login page asks for /favicon.ico.
    page.on(
        "response",
        lambda r: (
            js_errors.append(f"{r.status} {r.url}")
            if r.status >= 400 and not r.url.endswith("/favicon.ico")
            else None
        ),
    )
    yield page
    context.close()


@pytest.fixture
def seeded(live_server: Any) -> dict[str, Any]:
    """Data for the pages, written before the browser starts (see _in_thread)."""
    get_user_model().objects.create_superuser("finance", "finance@example.com", PASSWORD)
    org = factories.organization(name="acme")
    teams = [factories.team(organization=org, name=name) for name in ("ml", "web", "data")]
    project = factories.project(organization=org, name="checkout")
    keys = [
        factories.virtual_key(team=teams[0], name="ml-ci", project=project),
        factories.virtual_key(team=teams[1], name="web-dev"),
        factories.virtual_key(team=teams[2], name="etl"),
    ]
    factories.budget(owner=teams[0], amount_micros=400_000_000)
    factories.budget(owner=teams[1], amount_micros=90_000_000)
    factories.budget(owner=org, amount_micros=2_000_000_000)
    now = timezone.now()
    models = ["claude-sonnet-4-6", "claude-opus-4-1", "claude-haiku-4-5"]
    events = []
    for day in range(14):
        for i, key in enumerate(keys):
            for j, model in enumerate(models):
                cost = ((day * 7 + i * 3 + j * 5) % 11 + 1) * (i + 2) * (3 - j) * 210_000
                events.append(
                    event(
                        now - dt.timedelta(days=day, hours=1 + i + j),
                        key=key,
                        cost=cost,
                        served_model=model,
                        session_id=f"sess-{day}-{i}",
                        agent_id=f"agent-{j}",
                        client_name="claude-code",
                        client_version="2.0.14",
                        latency_ms=900 + 37 * j,
                        ttfb_ms=300 + 11 * i,
                    )
                )
    events.append(event(now - dt.timedelta(seconds=30), key=keys[1], status=429, cost=0))
    write(*events)
    rollups.run_rollups(settle_seconds=0)
    return {"org": org, "keys": keys}


def _log_in(page: Any, url: str) -> None:
    page.goto(url)
    assert "/admin/login/" in page.url
    page.fill("#id_username", "finance")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url(url)


def test_request_log_refreshes_itself_and_spend_dashboard_renders(
    live_server, seeded, page, js_errors
):
    ARTIFACTS.mkdir(exist_ok=True)

    _log_in(page, f"{live_server.url}/logs?range=7d")
    rows = page.locator("#log-rows tr")
    assert rows.count() == 50
    assert page.locator("#live-toggle").inner_text().strip() == "Live"

    key = seeded["keys"][0]
    _in_thread(lambda: write(event(timezone.now(), key=key, request_id="req-browser-new", cost=42)))
    new_row = page.locator("#log-rows tr").first
    # The page polls every 3 s; the new request must appear on top without a reload.
    page.wait_for_function(
        "() => document.querySelector('#log-rows tr')"
        " && document.querySelector('#log-rows tr').innerHTML.includes('req-browser-new')",
        timeout=10_000,
    )
    assert "$0.000042" in new_row.inner_text()
    page.screenshot(path=str(ARTIFACTS / "request-log.png"), full_page=False)

    new_row.locator("td.time a").click()
    page.wait_for_url("**/logs/req-browser-new")
    assert "Time to first byte" in page.content()
    page.screenshot(path=str(ARTIFACTS / "request-detail.png"), full_page=True)

    page.goto(f"{live_server.url}/dashboards/spend?range=30d")
    assert page.locator("svg.chart").count() == 3
    assert page.locator("#budgets tbody tr").count() == 3
    assert page.locator("#top-keys tbody tr").count() == 3
    assert page.locator("#top-sessions tbody tr").count() == 10
    box = page.locator("svg.chart").first.bounding_box()
    assert box is not None and box["width"] > 900 and box["height"] > 200
    page.screenshot(path=str(ARTIFACTS / "spend-dashboard.png"), full_page=True)

    with page.expect_download() as download:
        page.locator("#chart-team a.csv").click()
    csv_text = Path(download.value.path()).read_text()
    assert csv_text.startswith("bucket_start,team,team_id,cost_usd")

    page.goto(f"{live_server.url}/admin/governance/budget/")
    assert page.locator("td.field-budget_use div[title]").count() == 3
    page.screenshot(path=str(ARTIFACTS / "admin-budgets.png"), full_page=True)
    assert js_errors == []


def _ledger_row(pk: int) -> None:
    """A ledger row with a chosen id, as if its writer's transaction committed just now."""
    created_at = timezone.now() - dt.timedelta(seconds=1)
    UsageRecord.objects.create(pk=pk, **event(created_at, request_id=f"req-browser-{pk}"))


def test_request_log_shows_a_row_committed_after_a_higher_id(live_server, page, js_errors):
    def seed() -> None:
        get_user_model().objects.create_superuser("finance", "finance@example.com", PASSWORD)
        _ledger_row(1)

    _in_thread(seed)
    _log_in(page, f"{live_server.url}/logs")
    assert page.locator("#log-rows tr").count() == 1

    _in_thread(lambda: _ledger_row(3))  # id 2 is still in another writer's transaction
    page.wait_for_selector('#log-rows tr[data-id="3"]', timeout=10_000)
    _in_thread(lambda: _ledger_row(2))
    # The page hands the server's gaps back, so the next poll looks id 2 up again.
    page.wait_for_selector('#log-rows tr[data-id="2"]', timeout=10_000)
    ids = page.eval_on_selector_all("#log-rows tr", "rows => rows.map(r => r.dataset.id)")
    assert sorted(ids) == ["1", "2", "3"]
    assert js_errors == []
