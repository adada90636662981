"""The gunicorn worker of the docker image: uvicorn's worker, made to drain at shutdown.

At SIGTERM gunicorn's arbiter gives each worker --graceful-timeout seconds and then kills it.
uvicorn's own worker waits for the requests in flight with no limit of its own, so a stream
that outlives the arbiter's grace is killed together with the usage events still waiting in
memory: the lifespan writes those to the ledger only once the requests are done. This worker
waits at most GATEWAY_DRAIN_SECONDS, cancels what is left (a cancelled request still records
its row), then runs the lifespan shutdown; docker/entrypoint.sh gives the arbiter's grace a
margin over the drain so that all of it happens before the kill.

While uvicorn drains, its main loop no longer ticks, and the ticks are what tell the arbiter
that a worker is alive. An arbiter that keeps running while one worker drains (TTOU retires
the oldest worker, --max-requests retires a busy one) would then kill it as hung after
--timeout seconds, mid-stream. A heartbeat task keeps reporting in: it runs on the event
loop, so a loop that really hangs still goes quiet and --timeout still catches it.
"""

from __future__ import annotations

import asyncio

from django.conf import settings
from uvicorn_worker import UvicornWorker  # type: ignore[import-untyped]  # no py.typed


class DrainingUvicornWorker(UvicornWorker):  # type: ignore[misc]  # an untyped base
    async def _serve(self) -> None:
        # Read here, not in __init__: gunicorn builds the worker in the arbiter, before the
        # application (and with it Django's settings) is loaded.
        self.config.timeout_graceful_shutdown = settings.GATEWAY_DRAIN_SECONDS
        heartbeat = asyncio.create_task(self._heartbeat()) if self.timeout > 0 else None
        try:
            await super()._serve()
        finally:
            if heartbeat is not None:
                heartbeat.cancel()

    async def _heartbeat(self) -> None:
        # gunicorn's worker.timeout is already half the arbiter's --timeout.
        while True:
            self.notify()
            await asyncio.sleep(self.timeout)
