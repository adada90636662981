"""Usage events leave the request as plain dicts and reach the ledger in batches.

The request path only appends to an in-memory list (no thread hop, no I/O). A background task
hands batches to one dedicated writer thread, which keeps its database connection between
batches and writes them to the ledger; if the database is unavailable the batch is appended to
a local spool file, and spooled batches are replayed once it is back. Inserts are idempotent by
request_id, so a batch replayed twice is harmless.

A row the ledger refuses for its content (the writer reports it back) goes to a dead-letter
file alone; the rest of its batch is written (telemetry/spool.py describes the files). The
in-memory list is bounded (`max_pending`): past it, put() hands events to a spill thread that
appends them to the spool, so a slow or hung database costs neither memory nor events. While
anything waits on disk (or the writer is far behind), the optional beacon advertises it so that
reconciliation never lowers a budget counter to an incomplete ledger.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

from telemetry import spool
from telemetry.spool import Backlog, Rejected, WriteResult

logger = logging.getLogger("gateway.usage")

# A writer returns how many events it wrote, or a WriteResult naming the ones it refused.
Writer = Callable[[list[dict[str, Any]]], int | WriteResult]
WARN_EVERY_SECONDS = 60.0
SPILL_CHUNK = 5_000  # events per spool append from the spill thread


class Beacon(Protocol):
    def publish(self, backlog: Backlog) -> None: ...

    def close(self) -> None: ...


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _rejected(outcome: int | WriteResult) -> list[Rejected]:
    return outcome.rejected if isinstance(outcome, WriteResult) else []


class UsageBuffer:
    def __init__(
        self,
        writer: Writer,
        spool_dir: Path,
        *,
        flush_interval: float = 0.25,
        batch_size: int = 500,
        replay_interval: float = 5.0,
        release: Callable[[], None] | None = None,
        max_pending: int = 20_000,
        beacon: Beacon | None = None,
    ) -> None:
        self._writer = writer
        # Every write and replay runs on this one thread, in order: the writer may keep a
        # thread-bound connection open between batches, and `release` (run on the same thread
        # at close) hands it back.
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ledger-writer")
        # Overflow appends and beacon updates: never waiting behind a hung ledger write.
        self._side = ThreadPoolExecutor(max_workers=1, thread_name_prefix="usage-spill")
        self._release = release
        self._spool_dir = spool_dir
        self._flush_interval = flush_interval
        self._batch_size = batch_size
        self._replay_interval = replay_interval
        self._max_pending = max(max_pending, batch_size)
        self._beacon = beacon
        self._pending: list[dict[str, Any]] = []
        # deque: put() appends on the event loop, the spill thread pops, no lock on the loop.
        self._overflow: collections.deque[dict[str, Any]] = collections.deque()
        self._spill_scheduled = False
        self._advertise_scheduled = False
        self._spool_lock = threading.Lock()  # appends from the writer and the spill thread
        self._warned_at: dict[str, float] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._last_replay = 0.0
        self._closing = False
        self.written = 0
        self.spooled = 0
        self.spilled = 0  # of `spooled`: events that overflowed the in-memory queue
        self.dead_lettered = 0

    # --- the request path ---------------------------------------------------------------

    def put(self, event: dict[str, Any]) -> None:
        """Called on the request path: never blocks, never raises."""
        if len(self._pending) < self._max_pending:
            self._pending.append(event)
            if len(self._pending) >= self._batch_size:
                self._wake.set()
        else:
            self._overflow.append(event)
            self._schedule_spill()
        self._ensure_running()

    def _due(self, warning: str) -> bool:
        """Rate limit for a warning that could otherwise come with every event."""
        now = time.monotonic()
        if now - self._warned_at.get(warning, -WARN_EVERY_SECONDS) < WARN_EVERY_SECONDS:
            return False
        self._warned_at[warning] = now
        return True

    def _schedule_spill(self) -> None:
        if self._due("full"):
            logger.warning(
                "usage queue full (%d events waiting for the ledger): spilling to the spool",
                len(self._pending),
            )
        if self._spill_scheduled:
            return
        self._spill_scheduled = True
        try:
            self._side.submit(self._spill)
        except RuntimeError:  # interpreter shutting down: keep the events in memory
            self._spill_scheduled = False
            self._pending.extend(self._take_overflow())

    def _ensure_running(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    # --- writing --------------------------------------------------------------------------

    async def _run(self) -> None:
        while not self._closing:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._flush_interval)
            self._wake.clear()
            await self.flush()

    async def flush(self) -> None:
        # Only what is pending now: events arriving during the writes wait for the next tick.
        # Draining "while pending" kept the writer busy back to back under load with batches of
        # a few rows, each paying the connection and commit costs (benchmarks/README.md).
        pending, self._pending = self._pending, []
        for start in range(0, len(pending), self._batch_size):
            await self._write_or_spool(pending[start : start + self._batch_size])
        loop_time = asyncio.get_running_loop().time()
        if loop_time - self._last_replay >= self._replay_interval:
            self._last_replay = loop_time
            await self.replay_spool()
            self._advertise()

    async def _write_or_spool(self, batch: list[dict[str, Any]]) -> None:
        try:
            await self._on_thread(self._write, batch)
        except Exception:
            logger.warning(
                "ledger unavailable; spooling %d usage events", len(batch), exc_info=True
            )
            await self._on_thread(self._spool, batch)

    def _write(self, batch: list[dict[str, Any]]) -> None:
        rejected = _rejected(self._writer(batch))
        if rejected:
            self._dead_letter(rejected, [])
        self.written += len(batch) - len(rejected)

    def _spool_file(self) -> Path:
        return self._spool_dir / f"usage-{os.getpid()}.jsonl"

    def _spool(self, batch: list[dict[str, Any]]) -> None:
        with self._spool_lock:
            spool.append(self._spool_file(), batch)
            self.spooled += len(batch)
        self._advertise()

    def _dead_letter(self, rejected: list[Rejected], unreadable: list[bytes]) -> None:
        lines = [spool.dead_letter_line(error=r.error, event=r.event) for r in rejected]
        lines += [spool.dead_letter_line(error="unreadable spool line", raw=r) for r in unreadable]
        path = spool.write_dead_letters(self._spool_dir, lines)
        self.dead_lettered += len(lines)
        logger.error(
            "the ledger refused %d usage events; kept in %s (admin: usage dead letters)",
            len(lines),
            path,
        )
        self._advertise()

    async def _on_thread(self, function: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._thread, function, *args)

    # --- overflow: the spill thread -------------------------------------------------------

    def _take_overflow(self, limit: int | None = None) -> list[dict[str, Any]]:
        taken: list[dict[str, Any]] = []
        while limit is None or len(taken) < limit:
            try:
                taken.append(self._overflow.popleft())
            except IndexError:
                break
        return taken

    def _spill(self) -> None:
        # Cleared first: an event put after this line schedules another spill, or is taken
        # below, so none is left behind.
        self._spill_scheduled = False
        while batch := self._take_overflow(SPILL_CHUNK):
            try:
                self._spool(batch)
            except Exception:
                # Disk full or gone: nothing is dropped; the next overflow tries again.
                if self._due("spill"):
                    logger.exception("could not spill %d usage events to the spool", len(batch))
                self._overflow.extendleft(reversed(batch))
                return
            self.spilled += len(batch)

    # --- replay -----------------------------------------------------------------------------

    async def replay_spool(self) -> int:
        replayed: int = await self._on_thread(self._replay)
        return replayed

    def _replay(self) -> int:
        """Write every spooled event; a file is removed once all of it was written or
        dead-lettered. An unreadable file goes to dead/, and replay goes on with the next file;
        an unavailable ledger stops the replay and keeps the file."""
        if not self._spool_dir.is_dir():
            return 0
        replayed = 0
        self._reclaim_orphans()
        for path in sorted(self._spool_dir.glob(spool.REPLAY_GLOB)):
            outcome = self._replay_file(path)
            if outcome is None:
                return replayed
            replayed += outcome
        if replayed:
            logger.info("replayed %d spooled usage events into the ledger", replayed)
        return replayed

    def _replay_file(self, path: Path) -> int | None:
        claimed = path.with_suffix(f".replaying-{os.getpid()}")  # another process may replay
        try:
            with self._spool_lock:
                data = spool.claim(path, claimed)
        except OSError:
            self._bury(claimed if claimed.exists() else path)
            return 0
        if data is None:
            return 0
        events, unreadable = spool.decode_lines(data)
        rejected: list[Rejected] = []
        try:
            for start in range(0, len(events), self._batch_size):
                rejected += _rejected(self._writer(events[start : start + self._batch_size]))
        except Exception:
            # Its refused rows are found again next time (none was dead-lettered yet).
            self._keep(claimed)
            logger.warning("ledger still unavailable; %d events stay spooled", len(events))
            return None
        try:
            if rejected or unreadable:
                self._dead_letter(rejected, unreadable)
        except OSError:
            self._keep(claimed)
            logger.exception("could not write usage dead letters; the spool file stays")
            return None
        claimed.unlink()
        return len(events) - len(rejected)

    def _keep(self, claimed: Path) -> None:
        """Back for the next attempt, under a name no writer appends to."""
        claimed.rename(self._spool_dir / f"usage-{os.getpid()}-{time.time_ns()}.jsonl")

    def _bury(self, path: Path) -> None:
        try:
            spool.bury_unreadable(path, self._spool_dir)
        except OSError:
            logger.exception("unreadable usage spool file %s could not be moved aside", path)
            return
        logger.error("usage spool file %s is unreadable; moved to dead/", path.name)
        self._advertise()

    def _reclaim_orphans(self) -> None:
        """A process that died while replaying leaves `*.replaying-<pid>`: put it back."""
        for path in self._spool_dir.glob("usage-*.replaying-*"):
            pid = path.suffix.rpartition("-")[2]
            if not pid.isdigit() or int(pid) == os.getpid() or _alive(int(pid)):
                continue
            with contextlib.suppress(FileNotFoundError):
                path.rename(self._spool_dir / f"usage-orphan-{pid}-{time.time_ns()}.jsonl")

    # --- the backlog beacon -----------------------------------------------------------------

    def _advertise(self) -> None:
        """Refresh the beacon soon, on the spill thread (Redis may be slow or down)."""
        if self._beacon is None or self._advertise_scheduled:
            return
        self._advertise_scheduled = True
        with contextlib.suppress(RuntimeError):  # interpreter shutting down
            self._side.submit(self._publish)

    def _publish(self) -> None:
        self._advertise_scheduled = False
        if self._beacon is None:
            return
        try:
            on_disk = spool.backlog(self._spool_dir)
        except OSError:
            logger.warning("could not count the usage spool", exc_info=True)
            return
        # Only a real lag counts: a batch or less in memory is the normal flush delay.
        waiting = len(self._pending) + len(self._overflow)
        queued = waiting if waiting > self._batch_size else 0
        self._beacon.publish(Backlog(on_disk.spooled, on_disk.dead, queued))

    # --- shutdown ---------------------------------------------------------------------------

    async def close(self) -> None:
        # Not cancelled: a cancelled write would lose its batch (neither written nor spooled),
        # so the writer finishes the flush in progress and then stops.
        if self._task is not None:
            self._closing = True
            self._wake.set()
            try:
                await self._task
            except Exception:
                logger.exception("usage writer task failed")
            finally:
                self._task = None
                self._closing = False
        await self._on_side(self._spill)  # spills under way end first
        self._last_replay = float("-inf")
        await self.flush()
        while self._pending or self._overflow:  # events put while the final batch was written
            self._pending.extend(self._take_overflow())  # no spill thread to wait for now
            await self.flush()
        if self._beacon is not None:
            await self._on_side(self._publish)
            await self._on_side(self._beacon.close)
        if self._release is not None:
            with contextlib.suppress(Exception):
                await self._on_thread(self._release)

    async def _on_side(self, function: Callable[[], Any]) -> None:
        await asyncio.get_running_loop().run_in_executor(self._side, function)
