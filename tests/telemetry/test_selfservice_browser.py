"""The self-service page in a real headless Chromium (Debian's `chromium`, driven by
Playwright, as tests/telemetry/test_browser.py does): a developer pastes their key, submits,
and sees their budgets; the key never reaches the URL. Skipped when Chromium is missing."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.utils import timezone

from telemetry import rollups
from tests import factories
from tests.telemetry.api_support import world
from tests.telemetry.usage_events import event, write

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"]
ARTIFACTS = Path(settings.BASE_DIR) / "test-artifacts"

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
pytestmark = [
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="Chromium is not installed at /usr/bin/chromium (apt-get install -y chromium)",
    ),
    pytest.mark.django_db(transaction=True),
]


@pytest.fixture
def page() -> Iterator[tuple[Any, list[str]]]:
    errors: list[str] = []
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            tab = context.new_page()
            tab.set_default_timeout(10_000)
            tab.on("pageerror", lambda error: errors.append(str(error)))
            tab.on(
                "response",
                lambda r: errors.append(f"{r.status} {r.url}") if r.status >= 400 else None,
            )
            yield tab, errors
        finally:
            browser.close()


@pytest.fixture
def secret(live_server: Any) -> str:
    """A developer sub-key with budgets and spend, written before the browser starts (the
    browser's event loop would refuse ORM calls)."""
    w = world()
    factories.budget(owner=w.backend, amount_micros=200_000_000)
    factories.budget(owner=w.acme, amount_micros=1_000_000_000)
    write(
        event(timezone.now() - dt.timedelta(minutes=2), key=w.alice, cost=126_000_000),
        event(timezone.now() - dt.timedelta(minutes=1), key=w.ml_key, cost=5_000_000),
    )
    rollups.run_rollups(settle_seconds=0)
    return w.alice_secret


def test_a_developer_pastes_their_key_and_sees_their_budgets(live_server, secret, page):
    tab, errors = page
    ARTIFACTS.mkdir(exist_ok=True)

    tab.goto(f"{live_server.url}/me")
    assert tab.locator("#budgets").count() == 0
    tab.fill("#key", secret)
    tab.click("#key-form button[type=submit]")
    tab.wait_for_selector("#budgets")

    assert tab.url == f"{live_server.url}/me"  # the key is not in the URL
    assert tab.locator("#statusline-text").inner_text() == _statusline()
    rows = tab.locator("#budgets tbody tr")
    assert rows.count() == 2
    assert "team budget" in rows.nth(0).inner_text() and "$126.00" in rows.nth(0).inner_text()
    assert "63%" in rows.nth(0).inner_text()
    assert tab.locator("#usage-models tbody tr").count() == 1
    assert secret not in tab.content() and tab.input_value("#key") == ""
    tab.screenshot(path=str(ARTIFACTS / "self-service.png"), full_page=True)

    tab.fill("#key", "sk-gw-not-a-key")
    tab.click("#key-form button[type=submit]")
    tab.wait_for_selector("#error")
    assert "unknown, revoked or expired" in tab.locator("#error").inner_text()
    assert errors == [f"401 {live_server.url}/me"]  # only the refused key's answer


def _statusline() -> str:
    now = timezone.now()
    first = (now.replace(day=1) + dt.timedelta(days=32)).replace(day=1)
    return f"team budget 63 % used, resets {first:%b} {first.day}"
