"""ASGI entry point: the proxy routes, then Django for everything else."""

from __future__ import annotations

import gc
import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gatewaysite.settings")

django_application = get_asgi_application()

from proxy.app import application as proxy_application  # noqa: E402 (needs Django set up)

application = proxy_application(django_application)

# Objects alive after start-up are never garbage; freezing them halves uvicorn's p99 here
# (shared/PERFORMANCE.md).
gc.freeze()
