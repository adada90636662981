"""Usage events leave the request as plain dicts and reach the ledger in batches.

The request path only appends to an in-memory list (no thread hop, no I/O). A background task
hands batches to one dedicated writer thread, which keeps its database connection between
batches and writes them to the ledger; if the database is unavailable the batch is appended to
a local spool file, and spooled batches are replayed once it is back. Inserts are idempotent by
request_id, so a batch replayed twice is harmless.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson

logger = logging.getLogger("gateway.usage")

Writer = Callable[[list[dict[str, Any]]], int]
DATETIME_FIELDS = ("created_at",)


def _encode(event: dict[str, Any]) -> bytes:
    return orjson.dumps(event)


def _decode(line: bytes) -> dict[str, Any]:
    event: dict[str, Any] = orjson.loads(line)
    for name in DATETIME_FIELDS:
        if isinstance(event.get(name), str):
            event[name] = dt.datetime.fromisoformat(event[name])
    return event


def _decode_all(data: bytes) -> list[dict[str, Any]]:
    """Every complete event of a spool file; a line torn by a crash mid-append is skipped."""
    events = []
    for line in data.splitlines():
        if not line.strip():
            continue
        try:
            events.append(_decode(line))
        except ValueError:  # orjson.JSONDecodeError and a bad datetime are both ValueErrors
            logger.warning("skipping an unreadable line of the usage spool")
    return events


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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
    ) -> None:
        self._writer = writer
        # Every write and replay runs on this one thread, in order: the writer may keep a
        # thread-bound connection open between batches, and `release` (run on the same thread
        # at close) hands it back.
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ledger-writer")
        self._release = release
        self._spool_dir = spool_dir
        self._flush_interval = flush_interval
        self._batch_size = batch_size
        self._replay_interval = replay_interval
        self._pending: list[dict[str, Any]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._last_replay = 0.0
        self._closing = False
        self.written = 0
        self.spooled = 0

    def put(self, event: dict[str, Any]) -> None:
        """Called on the request path: never blocks, never raises."""
        self._pending.append(event)
        if len(self._pending) >= self._batch_size:
            self._wake.set()
        self._ensure_running()

    def _ensure_running(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

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

    async def _write_or_spool(self, batch: list[dict[str, Any]]) -> None:
        try:
            await self._on_thread(self._writer, batch)
            self.written += len(batch)
        except Exception:
            logger.warning(
                "ledger unavailable; spooling %d usage events", len(batch), exc_info=True
            )
            await self._on_thread(self._spool, batch)

    def _spool_file(self) -> Path:
        return self._spool_dir / f"usage-{os.getpid()}.jsonl"

    def _spool(self, batch: list[dict[str, Any]]) -> None:
        self._spool_dir.mkdir(parents=True, exist_ok=True)
        with self._spool_file().open("ab") as handle:
            # The leading newline ends a line torn by a crash of an earlier process that had
            # this pid (containers reuse pids), so the torn line cannot swallow this batch.
            handle.write(b"\n" + b"".join(_encode(event) + b"\n" for event in batch))
            handle.flush()
            os.fsync(handle.fileno())
        self.spooled += len(batch)

    async def _on_thread(self, function: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._thread, function, *args)

    async def replay_spool(self) -> int:
        replayed: int = await self._on_thread(self._replay)
        return replayed

    def _replay(self) -> int:
        """Write every spooled event; a file is removed only after all of it was written."""
        if not self._spool_dir.is_dir():
            return 0
        replayed = 0
        self._reclaim_orphans()
        for path in sorted(self._spool_dir.glob("usage-*.jsonl")):
            claimed = path.with_suffix(f".replaying-{os.getpid()}")
            try:
                path.rename(claimed)  # another process may be replaying it
            except FileNotFoundError:
                continue
            events = _decode_all(claimed.read_bytes())
            try:
                for start in range(0, len(events), self._batch_size):
                    self._writer(events[start : start + self._batch_size])
            except Exception:
                # Still down: keep it for the next attempt, under a name no writer appends to.
                claimed.rename(self._spool_dir / f"usage-{os.getpid()}-{time.time_ns()}.jsonl")
                logger.warning("ledger still unavailable; %d events stay spooled", len(events))
                return replayed
            claimed.unlink()
            replayed += len(events)
        if replayed:
            logger.info("replayed %d spooled usage events into the ledger", replayed)
        return replayed

    def _reclaim_orphans(self) -> None:
        """A process that died while replaying leaves `*.replaying-<pid>`: put it back."""
        for path in self._spool_dir.glob("usage-*.replaying-*"):
            pid = path.suffix.rpartition("-")[2]
            if not pid.isdigit() or int(pid) == os.getpid() or _alive(int(pid)):
                continue
            with contextlib.suppress(FileNotFoundError):
                path.rename(self._spool_dir / f"usage-orphan-{pid}-{time.time_ns()}.jsonl")

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
        self._last_replay = float("-inf")
        await self.flush()
        while self._pending:  # events put while the final batch was written
            await self.flush()
        if self._release is not None:
            with contextlib.suppress(Exception):
                await self._on_thread(self._release)
