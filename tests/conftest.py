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
    yield
    policy.local_cache.clear()
