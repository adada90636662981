from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.core.cache import cache

from governance import policy


@pytest.fixture(autouse=True)
def _fresh_caches() -> Iterator[None]:
    """Each test starts with no cached policy and an empty shared cache."""
    policy.local_cache.clear()
    cache.clear()
    policy.invalidate_all()  # a version no earlier test has seen, in the cache or the file
    yield
    policy.local_cache.clear()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """The per-process policy version file of gatewaysite.settings_test goes with the run."""
    from pathlib import Path

    from django.conf import settings

    Path(settings.GATEWAY_POLICY_VERSION_FILE).unlink(missing_ok=True)
