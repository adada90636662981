"""run_until_disconnect: the client is watched only once the work has run WATCH_AFTER_SECONDS,
and a client that leaves then cancels the work."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from proxy import forwarding


class Client:
    """An ASGI receive: counts its calls; says the client left after `leaves_after` seconds."""

    def __init__(self, leaves_after: float) -> None:
        self.leaves_after = leaves_after
        self.calls = 0

    async def __call__(self) -> dict[str, Any]:
        self.calls += 1
        await asyncio.sleep(self.leaves_after)
        return {"type": "http.disconnect"}


def other_tasks() -> set[asyncio.Task[Any]]:
    return {t for t in asyncio.all_tasks() if t is not asyncio.current_task() and not t.done()}


async def test_work_done_before_the_watch_delay_never_reads_the_client() -> None:
    client = Client(leaves_after=0)

    assert await forwarding.run_until_disconnect(asyncio.sleep(0), client) is False
    await asyncio.sleep(forwarding.WATCH_AFTER_SECONDS + 0.05)  # the timer would have fired

    assert client.calls == 0
    assert not other_tasks()


async def test_a_client_leaving_during_long_work_cancels_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(forwarding, "WATCH_AFTER_SECONDS", 0.01)
    cancelled = asyncio.Event()

    async def long_work() -> None:
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    client = Client(leaves_after=0.02)
    assert await asyncio.wait_for(forwarding.run_until_disconnect(long_work(), client), 2) is True
    assert cancelled.is_set()
    assert client.calls == 1


async def test_a_client_that_stays_lets_long_work_finish_and_stops_being_watched(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(forwarding, "WATCH_AFTER_SECONDS", 0.01)
    client = Client(leaves_after=5)

    assert await forwarding.run_until_disconnect(asyncio.sleep(0.1), client) is False
    await asyncio.sleep(0)  # the watcher's cancellation runs

    assert client.calls == 1
    assert not other_tasks()


async def test_an_error_of_the_work_reaches_the_caller(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(forwarding, "WATCH_AFTER_SECONDS", 0.01)

    async def failing_work() -> None:
        await asyncio.sleep(0.05)
        raise RuntimeError("upstream broke")

    with pytest.raises(RuntimeError, match="upstream broke"):
        await forwarding.run_until_disconnect(failing_work(), Client(leaves_after=5))
    await asyncio.sleep(0)
    assert not other_tasks()
