"""UsageBuffer: usage events reach the ledger in batches, and survive a database outage on disk."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import shutil
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest
from asgiref.sync import sync_to_async
from django.db import connection

from proxy.usage import UsageBuffer
from telemetry import ledger, spool
from telemetry.models import UsageRecord
from telemetry.spool import Rejected, WriteResult

CREATED = dt.datetime(2026, 11, 26, 12, 30, tzinfo=dt.UTC)


def event(number: int) -> dict[str, Any]:
    return {
        "request_id": f"gwreq_{number:032d}",
        "created_at": CREATED + dt.timedelta(seconds=number),
        "organization_id": 1,
        "key_id": 2,
        "route": "anthropic.messages",
        "requested_model": "claude-sonnet-4-6",
        "status": 200,
        "cost_micros": 100 + number,
    }


class Writer:
    """A ledger stand-in that can be switched off to play a database outage."""

    def __init__(self, *, down: bool = False, delay: float = 0.0) -> None:
        self.down = down
        self.delay = delay
        self.batches: list[list[dict[str, Any]]] = []
        self.started = threading.Event()

    def __call__(self, batch: list[dict[str, Any]]) -> int:
        self.started.set()
        time.sleep(self.delay)
        if self.down:
            raise ConnectionError("database is down")
        self.batches.append(list(batch))
        return len(batch)

    @property
    def events(self) -> list[dict[str, Any]]:
        return [e for batch in self.batches for e in batch]


def buffer_for(writer: Any, spool: Path, **options: Any) -> UsageBuffer:
    options.setdefault("flush_interval", 3600.0)  # tests flush; the background task waits
    options.setdefault("replay_interval", float("inf"))  # replay only when a test asks
    return UsageBuffer(writer, spool, **options)


def spool_files(spool: Path) -> list[Path]:
    return sorted(spool.glob("usage-*.jsonl"))


def spooled_request_ids(spool: Path) -> list[str]:
    return [
        orjson.loads(line)["request_id"]
        for path in spool_files(spool)
        for line in path.read_bytes().splitlines()
        if line.strip()
    ]


async def test_events_are_written_in_batches(tmp_path: Path) -> None:
    writer = Writer()
    buffer = buffer_for(writer, tmp_path, batch_size=2)
    for number in range(5):
        buffer.put(event(number))

    await buffer.flush()

    # A full batch also wakes the background task, which may write one of them meanwhile.
    assert sorted(len(b) for b in writer.batches) == [1, 2, 2]
    assert sorted(e["request_id"] for e in writer.events) == [
        event(n)["request_id"] for n in range(5)
    ]
    assert buffer.written == 5
    await buffer.close()


async def test_background_task_writes_without_an_explicit_flush(tmp_path: Path) -> None:
    writer = Writer()
    buffer = buffer_for(writer, tmp_path, flush_interval=0.02)
    buffer.put(event(1))

    for _ in range(200):
        if writer.events:
            break
        await asyncio.sleep(0.01)

    assert [e["request_id"] for e in writer.events] == [event(1)["request_id"]]
    await buffer.close()


async def test_failing_writer_spools_events_to_an_fsynced_jsonl_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[int] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(fd)
        real_fsync(fd)

    monkeypatch.setattr("proxy.usage.os.fsync", fsync)
    buffer = buffer_for(Writer(down=True), tmp_path / "spool")
    for number in range(3):
        buffer.put(event(number))

    await buffer.flush()

    assert spool_files(tmp_path / "spool") == [tmp_path / "spool" / f"usage-{os.getpid()}.jsonl"]
    assert spooled_request_ids(tmp_path / "spool") == [event(n)["request_id"] for n in range(3)]
    assert buffer.spooled == 3 and buffer.written == 0
    assert synced
    lines = [line for line in spool_files(tmp_path / "spool")[0].read_bytes().splitlines() if line]
    assert orjson.loads(lines[0])["created_at"] == "2026-11-26T12:30:00+00:00"


async def test_spooled_events_are_replayed_once_after_recovery(tmp_path: Path) -> None:
    writer = Writer(down=True)
    buffer = buffer_for(writer, tmp_path)
    for number in range(3):
        buffer.put(event(number))
    await buffer.flush()

    writer.down = False
    replayed = await buffer.replay_spool()
    again = await buffer.replay_spool()

    assert (replayed, again) == (3, 0)
    assert writer.events == [event(n) for n in range(3)]  # created_at is a datetime again
    assert list(os.listdir(tmp_path)) == []


async def test_still_failing_replay_keeps_the_events_on_disk(tmp_path: Path) -> None:
    writer = Writer(down=True)
    buffer = buffer_for(writer, tmp_path)
    for number in range(3):
        buffer.put(event(number))
    await buffer.flush()

    assert await buffer.replay_spool() == 0
    assert sorted(spooled_request_ids(tmp_path)) == [event(n)["request_id"] for n in range(3)]

    writer.down = False
    assert await buffer.replay_spool() == 3
    assert spool_files(tmp_path) == []


async def test_flush_replays_the_spool_once_the_ledger_is_back(tmp_path: Path) -> None:
    writer = Writer(down=True)
    buffer = buffer_for(writer, tmp_path, replay_interval=0.0)
    buffer.put(event(1))
    await buffer.flush()

    writer.down = False
    buffer.put(event(2))
    await buffer.flush()

    assert sorted(e["request_id"] for e in writer.events) == [
        event(1)["request_id"],
        event(2)["request_id"],
    ]
    assert spool_files(tmp_path) == []
    await buffer.close()


async def test_a_torn_last_line_does_not_strand_the_spooled_events(tmp_path: Path) -> None:
    """A crash while appending leaves half a line; the complete lines must still be replayed."""
    writer = Writer()
    good = b"".join(orjson.dumps(event(n)) + b"\n" for n in range(2))
    (tmp_path / "usage-999.jsonl").write_bytes(good + b'{"request_id": "gwreq_torn", "crea')
    buffer = buffer_for(writer, tmp_path)

    replayed = await buffer.replay_spool()

    assert replayed == 2
    assert [e["request_id"] for e in writer.events] == [event(n)["request_id"] for n in range(2)]
    assert spool_files(tmp_path) == []


async def test_close_flushes_pending_events(tmp_path: Path) -> None:
    writer = Writer()
    buffer = buffer_for(writer, tmp_path, flush_interval=3600.0)
    buffer.put(event(1))
    buffer.put(event(2))

    await buffer.close()

    assert [e["request_id"] for e in writer.events] == [
        event(1)["request_id"],
        event(2)["request_id"],
    ]


async def test_close_during_a_failing_write_still_spools_the_batch(tmp_path: Path) -> None:
    writer = Writer(down=True, delay=0.2)
    buffer = buffer_for(writer, tmp_path, flush_interval=0.01)
    buffer.put(event(1))
    started = await asyncio.get_running_loop().run_in_executor(None, writer.started.wait, 5)
    assert started  # the background task is inside the write when close() comes

    await buffer.close()

    assert spooled_request_ids(tmp_path) == [event(1)["request_id"]]


@pytest.mark.django_db(transaction=True)
async def test_replaying_the_same_file_twice_does_not_duplicate_ledger_rows(
    tmp_path: Path,
) -> None:
    """A crash between writing a replayed batch and deleting its file replays it again."""
    events = [{**event(n), "request_id": "gwreq_" + uuid.uuid4().hex} for n in range(4)]
    failing = buffer_for(Writer(down=True), tmp_path / "spool")
    for item in events:
        failing.put(item)
    await failing.flush()
    (spooled,) = spool_files(tmp_path / "spool")
    shutil.copy(spooled, tmp_path / "copy.jsonl")
    buffer = buffer_for(
        ledger.write_events_reusing_connection, tmp_path / "spool", release=ledger.close_connection
    )

    assert await buffer.replay_spool() == 4
    shutil.copy(tmp_path / "copy.jsonl", spooled)
    assert await buffer.replay_spool() == 4
    await buffer.close()  # hands the writer thread's connection back

    rows = await sync_to_async(ledger_rows, thread_sensitive=False)()
    assert rows == [(e["request_id"], e["created_at"]) for e in events]


def ledger_rows() -> list[tuple[str, dt.datetime]]:
    """Read in a worker thread that hands its connection back (PostgreSQL drops the test
    database at the end and refuses while a connection is open)."""
    try:
        return list(
            UsageRecord.objects.order_by("created_at").values_list("request_id", "created_at")
        )
    finally:
        connection.close()


def test_a_replay_abandoned_by_a_dead_process_is_taken_up_again(tmp_path: Path) -> None:
    written: list[dict[str, Any]] = []
    spool = tmp_path / "spool"
    spool.mkdir()
    orphan = spool / "usage-123.replaying-999999"  # pid 999999 is not running here
    orphan.write_bytes(b'{"request_id": "r-orphan", "created_at": "2026-11-26T10:00:00+00:00"}\n')

    def writer(batch: list[dict[str, Any]]) -> int:
        written.extend(batch)
        return len(batch)

    buffer = UsageBuffer(writer, spool)
    assert buffer._replay() == 1
    assert [e["request_id"] for e in written] == ["r-orphan"]
    assert not any(spool.iterdir())


# --- a bad row costs only itself; replay goes past a bad file (issue 10, item 2) --------------


class RefusingWriter(Writer):
    """Refuses the events whose request id it is told, as the ledger does a row it cannot hold."""

    def __init__(self, refuse: set[str]) -> None:
        super().__init__()
        self.refuse = refuse

    def __call__(self, batch: list[dict[str, Any]]) -> WriteResult:  # type: ignore[override]
        refused = [e for e in batch if e["request_id"] in self.refuse]
        self.batches.append([e for e in batch if e["request_id"] not in self.refuse])
        return WriteResult(
            len(batch) - len(refused), [Rejected(e, "DataError: value too long") for e in refused]
        )


def dead_letters(spool: Path) -> list[dict[str, Any]]:
    return [
        orjson.loads(line)
        for path in sorted((spool / "dead").glob("usage-dead-*.jsonl"))
        for line in path.read_bytes().splitlines()
        if line.strip()
    ]


def write_spool_file(path: Path, events: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events))


async def test_a_refused_row_is_dead_lettered_and_the_rest_of_its_batch_written(
    tmp_path: Path,
) -> None:
    writer = RefusingWriter({event(3)["request_id"]})
    buffer = buffer_for(writer, tmp_path)
    for number in range(6):
        buffer.put(event(number))

    await buffer.flush()

    assert [e["request_id"] for e in writer.events] == [
        event(n)["request_id"] for n in (0, 1, 2, 4, 5)
    ]
    (dead,) = dead_letters(tmp_path)
    assert dead["event"]["request_id"] == event(3)["request_id"]
    assert dead["error"] == "DataError: value too long"
    assert (buffer.written, buffer.dead_lettered, buffer.spooled) == (5, 1, 0)
    assert spool_files(tmp_path) == []
    assert spool.backlog(tmp_path) == spool.Backlog(spooled=0, dead=1)
    await buffer.close()


async def test_replay_goes_past_a_file_with_a_refused_row(tmp_path: Path) -> None:
    writer = RefusingWriter({event(1)["request_id"]})
    write_spool_file(tmp_path / "usage-1-1.jsonl", [event(0), event(1), event(2)])
    write_spool_file(tmp_path / "usage-2-2.jsonl", [event(3), event(4)])
    buffer = buffer_for(writer, tmp_path)

    assert await buffer.replay_spool() == 4

    assert sorted(e["request_id"] for e in writer.events) == [
        event(n)["request_id"] for n in (0, 2, 3, 4)
    ]
    assert [d["event"]["request_id"] for d in dead_letters(tmp_path)] == [event(1)["request_id"]]
    assert spool_files(tmp_path) == []


async def test_replay_moves_an_unreadable_file_aside_and_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = Writer()
    write_spool_file(tmp_path / "usage-1-1.jsonl", [event(0)])
    write_spool_file(tmp_path / "usage-2-2.jsonl", [event(1), event(2)])
    real_claim = spool.claim

    def claim(path: Path, claimed: Path) -> bytes | None:
        data = real_claim(path, claimed)
        if path.name == "usage-1-1.jsonl":
            raise OSError(5, "Input/output error")
        return data

    monkeypatch.setattr(spool, "claim", claim)
    buffer = buffer_for(writer, tmp_path)

    assert await buffer.replay_spool() == 2

    assert [e["request_id"] for e in writer.events] == [event(n)["request_id"] for n in (1, 2)]
    assert spool_files(tmp_path) == []
    (buried,) = (tmp_path / "dead").glob("unreadable-*")
    assert buried.name.startswith("unreadable-usage-1-1.replaying-")
    assert spool.backlog(tmp_path) == spool.Backlog(spooled=0, dead=1)


async def test_a_torn_line_is_dead_lettered_not_dropped(tmp_path: Path) -> None:
    writer = Writer()
    good = orjson.dumps(event(0)) + b"\n"
    (tmp_path / "usage-999.jsonl").write_bytes(good + b'{"request_id": "gwreq_torn", "crea')
    buffer = buffer_for(writer, tmp_path)

    assert await buffer.replay_spool() == 1

    (dead,) = dead_letters(tmp_path)
    assert dead["raw"] == '{"request_id": "gwreq_torn", "crea'
    assert dead["error"] == "unreadable spool line"


@pytest.mark.django_db(transaction=True)
async def test_replay_with_a_bad_file_first_still_writes_the_good_file(tmp_path: Path) -> None:
    """The real ledger: a row the database refuses (no created_at) used to fail its whole
    file and stop the replay there, stranding every later file."""
    bad = {**event(1), "request_id": "gwreq_" + uuid.uuid4().hex}
    del bad["created_at"]
    first = [{**event(0), "request_id": "gwreq_" + uuid.uuid4().hex}, bad]
    second = [{**event(n), "request_id": "gwreq_" + uuid.uuid4().hex} for n in (2, 3)]
    write_spool_file(tmp_path / "usage-1-1.jsonl", first)
    write_spool_file(tmp_path / "usage-2-2.jsonl", second)
    buffer = buffer_for(
        ledger.write_events_reusing_connection, tmp_path, release=ledger.close_connection
    )

    assert await buffer.replay_spool() == 3
    await buffer.close()

    rows = await sync_to_async(ledger_rows, thread_sensitive=False)()
    assert sorted(r for r, _ in rows) == sorted(e["request_id"] for e in [first[0], *second])
    assert [d["event"]["request_id"] for d in dead_letters(tmp_path)] == [bad["request_id"]]
    assert spool_files(tmp_path) == []


# --- the bounded queue spills to the spool (issue 10, item 10) --------------------------------


class BlockedWriter(Writer):
    """A hung database: every write waits until released."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()

    def __call__(self, batch: list[dict[str, Any]]) -> int:
        self.started.set()
        assert self.release.wait(30), "the test never released the writer"
        self.batches.append(list(batch))
        return len(batch)


async def wait_until(predicate: Any, seconds: float = 10.0) -> None:
    for _ in range(int(seconds / 0.01)):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not met in time")


async def test_a_full_queue_spills_to_the_spool_without_blocking_and_loses_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = BlockedWriter()
    disk = threading.Event()  # a slow disk too: put() must not wait for it either
    real_append = spool.append

    def slow_append(path: Path, events: Any) -> None:
        assert disk.wait(30)
        real_append(path, events)

    monkeypatch.setattr(spool, "append", slow_append)
    buffer = buffer_for(writer, tmp_path, flush_interval=0.01, batch_size=5, max_pending=10)
    buffer.put(event(0))
    started = await asyncio.get_running_loop().run_in_executor(None, writer.started.wait, 5)
    assert started  # the writer thread now hangs inside the database call

    for number in range(1, 101):
        buffer.put(event(number))  # returns at once, with the writer and the disk both stuck

    assert len(buffer._pending) == 10  # bounded
    disk.set()
    await wait_until(lambda: buffer.spilled == 90)
    assert sorted(spooled_request_ids(tmp_path)) == [event(n)["request_id"] for n in range(11, 101)]

    writer.release.set()
    await buffer.close()

    written = [e["request_id"] for e in writer.events]
    assert sorted(written) == [event(n)["request_id"] for n in range(101)]  # each exactly once
    assert spool_files(tmp_path) == []


async def test_a_full_queue_warns_once_per_minute(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    writer = BlockedWriter()
    buffer = buffer_for(writer, tmp_path, flush_interval=0.01, batch_size=1, max_pending=1)
    buffer.put(event(0))
    assert await asyncio.get_running_loop().run_in_executor(None, writer.started.wait, 5)

    with caplog.at_level("WARNING", logger="gateway.usage"):
        for number in range(1, 20):
            buffer.put(event(number))

    assert len([r for r in caplog.records if "usage queue full" in r.message]) == 1
    writer.release.set()
    await buffer.close()
    assert len(writer.events) == 20


# --- the backlog beacon (issue 10, item 2: reconciliation must see the backlog) ---------------


class RecordingBeacon:
    def __init__(self) -> None:
        self.published: list[spool.Backlog] = []
        self.closed = False

    def publish(self, backlog: spool.Backlog) -> None:
        self.published.append(backlog)

    def close(self) -> None:
        self.closed = True


async def test_the_beacon_advertises_a_spooled_backlog_and_its_end(tmp_path: Path) -> None:
    writer = Writer(down=True)
    beacon = RecordingBeacon()
    buffer = buffer_for(writer, tmp_path, beacon=beacon)
    for number in range(3):
        buffer.put(event(number))
    await buffer.flush()
    await wait_until(lambda: spool.Backlog(spooled=3) in beacon.published)

    writer.down = False
    await buffer.close()  # replays the spool, then publishes once more

    assert beacon.published[-1] == spool.Backlog()
    assert beacon.closed
