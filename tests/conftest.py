from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import time_machine
from django.core.cache import cache

from governance import policy


@pytest.fixture(autouse=True)
def _own_audit_anchor_file(settings: Any, tmp_path: Path) -> None:
    """Audit anchors written by one test (or a local gateway) never reach another's chain."""
    settings.GATEWAY_AUDIT_ANCHOR_FILE = str(tmp_path / "audit-anchors.jsonl")


@pytest.fixture(autouse=True)
def _fresh_caches() -> None:
    """Each test starts with an empty shared cache and a policy version no earlier test saw.

    Gateways started by a test build their own snapshots (proxy.snapshots.Snapshots), which
    start empty; the new version makes any running elsewhere reload theirs.
    """
    cache.clear()
    policy.invalidate_all()  # in the cache or the file


# A Wednesday noon (UTC) in the middle of a month: hours from any day, week or month boundary
# in every time zone the tests use.
STEADY_MOMENT = dt.datetime(2026, 11, 18, 12, 0, tzinfo=dt.UTC)


@pytest.fixture
def steady_clock() -> Iterator[dt.datetime]:
    """The clock at STEADY_MOMENT, ticking on from there: for in-process tests whose events a
    few minutes or days old must fall in the current day, week or month whenever the suite
    runs. Gateways in other processes keep the real clock, so tests that start one do not
    use it."""
    with time_machine.travel(STEADY_MOMENT, tick=True):
        yield STEADY_MOMENT


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """The per-process policy version file of gatewaysite.settings_test goes with the run."""
    from pathlib import Path

    from django.conf import settings

    Path(settings.GATEWAY_POLICY_VERSION_FILE).unlink(missing_ok=True)
