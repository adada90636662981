"""The ASGI entry point: the proxy routes as a bare ASGI app, Django for everything else, and
the ASGI lifespan (start-up and shutdown of the proxy runtime and the in-process jobs).

Proxy routes bypass Django's request cycle: no middleware, no request signals, no per-request
thread hops (shared/PERFORMANCE.md measured those at 0.7-0.8 ms and up to 60 % of capacity).
"""

from __future__ import annotations

import gc
import logging
import os
from typing import Any

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gatewaysite.settings")

django_application = get_asgi_application()

# Needs Django set up.
from proxy import app as proxy  # noqa: E402
from proxy import runtime  # noqa: E402
from telemetry import scheduler  # noqa: E402

logger = logging.getLogger("gateway.asgi")


async def application(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "http" and proxy.handles(scope["path"]):
        await proxy.proxy_app(scope, receive, send)
    elif scope["type"] == "lifespan":
        await lifespan(receive, send)
    else:
        await django_application(scope, receive, send)


async def lifespan(receive: Any, send: Any) -> None:
    """Start the runtime and jobs; at shutdown (after the server has drained the requests in
    flight, see README "Deploying") stop the jobs and write every pending usage event."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            runtime.current()
            scheduler.start()  # periodic jobs in process when there is no Celery broker
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            try:
                await scheduler.stop()
                await runtime.shutdown()  # flushes pending usage events to the ledger
            except Exception:
                logger.exception("error while shutting the gateway down")
            await send({"type": "lifespan.shutdown.complete"})
            return


# Objects alive after start-up are never garbage; freezing them halves uvicorn's p99 here
# (shared/PERFORMANCE.md).
gc.freeze()
