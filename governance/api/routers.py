"""The /api/v1/ router. Apps above governance (telemetry) register their resources on it from
their AppConfig.ready, since governance imports nothing of theirs."""

from __future__ import annotations

from typing import Any

from rest_framework.routers import DefaultRouter

router = DefaultRouter()


def register(prefix: str, viewset: type[Any], basename: str) -> None:
    """Add a resource under /api/v1/<prefix>/ (once, whatever calls it)."""
    if not any(existing == prefix for existing, _, _ in router.registry):
        router.register(prefix, viewset, basename=basename)
