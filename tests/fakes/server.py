"""What every fake upstream shares: an aiohttp app served on a free 127.0.0.1 port by a thread
with its own event loop (so synchronous tests and the gateway's own loop can both reach it), a
queue of scripted replies, and the JSON view of the requests it records.

A fake subclasses `FakeServer[ItsReply]`, declares `default` (what a request gets when nothing
is queued), names its thread and adds its routes in `routes()`. It starts with `start()` and
stops with `stop()`, or serves for the length of a `with` block.
"""

from __future__ import annotations

import asyncio
import collections
import json
import threading
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, Self, TypeVar

from aiohttp import web

ReplyT = TypeVar("ReplyT")

# Large enough for any request body a test sends (the gateway's own limit is 32 MiB).
MAX_BODY = 64 * 1024 * 1024


class JsonBody:
    """A recorded request (a dataclass with a `body` field) whose body a test reads as JSON."""

    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class FakeServer(Generic[ReplyT]):
    # Each fake redeclares `default` with its own Reply factory. The rest is keyword-only, so a
    # fake's own fields keep their positions in its constructor.
    default: ReplyT = field(kw_only=True)
    replies: collections.deque[ReplyT] = field(default_factory=collections.deque, kw_only=True)
    port: int = field(default=0, kw_only=True)
    _loop: asyncio.AbstractEventLoop | None = field(default=None, init=False, repr=False)
    _thread: threading.Thread | None = field(default=None, init=False, repr=False)
    _runner: web.AppRunner | None = field(default=None, init=False, repr=False)

    thread_name: ClassVar[str] = "fake-upstream"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def queue(self, *replies: ReplyT) -> None:
        self.replies.extend(replies)

    def next_reply(self) -> ReplyT:
        """The next queued reply, else the default."""
        return self.replies.popleft() if self.replies else self.default

    def routes(self, app: web.Application) -> None:
        raise NotImplementedError

    # --- lifecycle -----------------------------------------------------------------------

    def start(self) -> Self:
        ready = threading.Event()
        self._thread = threading.Thread(
            target=self._serve, args=(ready,), daemon=True, name=self.thread_name
        )
        self._thread.start()
        ready.wait(10)
        return self

    def _serve(self, ready: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        app = web.Application(client_max_size=MAX_BODY)
        self.routes(app)
        self._runner = web.AppRunner(app, access_log=None)
        loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        ready.set()
        loop.run_forever()
        loop.run_until_complete(self._runner.cleanup())
        loop.close()

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
