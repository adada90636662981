"""The usage spool on disk: appends that a replay cannot lose, a backlog counted cheaply."""

from __future__ import annotations

import datetime as dt
import decimal
import fcntl
from pathlib import Path
from typing import Any

import orjson
import pytest

from telemetry import spool


def events(*numbers: int) -> list[dict[str, Any]]:
    return [
        {"request_id": f"gwreq_{n}", "created_at": dt.datetime(2026, 11, 2, tzinfo=dt.UTC)}
        for n in numbers
    ]


def test_the_backlog_counts_spooled_and_dead_events_as_files_grow_and_move(tmp_path: Path) -> None:
    spool.append(tmp_path / "usage-1.jsonl", events(1, 2))
    assert spool.backlog(tmp_path) == spool.Backlog(spooled=2)

    spool.append(tmp_path / "usage-1.jsonl", events(3))
    (tmp_path / "usage-1.jsonl").rename(tmp_path / "usage-1.replaying-77")  # a replay claims it
    spool.append(tmp_path / "usage-1.jsonl", events(4))
    spool.write_dead_letters(
        tmp_path, [spool.dead_letter_line(error="DataError", event=events(5)[0])]
    )

    assert spool.backlog(tmp_path) == spool.Backlog(spooled=4, dead=1)
    (tmp_path / "usage-1.replaying-77").unlink()
    assert spool.backlog(tmp_path) == spool.Backlog(spooled=1, dead=1)


def test_a_torn_line_is_not_counted_as_an_event(tmp_path: Path) -> None:
    (tmp_path / "usage-9.jsonl").write_bytes(orjson.dumps(events(1)[0]) + b'\n{"request_id": "gw')
    assert spool.backlog(tmp_path).spooled == 1
    assert spool.backlog(tmp_path / "missing") == spool.Backlog()


def test_an_append_never_lands_in_a_file_a_replay_claimed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "usage-1.jsonl"
    spool.append(path, events(1))
    real_flock = fcntl.flock
    claimed: list[bytes | None] = []

    def flock_after_a_claim(handle: Any, operation: int) -> None:
        monkeypatch.setattr(fcntl, "flock", real_flock)  # once
        # A replay renames the file between the append's open() and its lock.
        claimed.append(spool.claim(path, tmp_path / "usage-1.replaying-77"))
        real_flock(handle, operation)

    monkeypatch.setattr(fcntl, "flock", flock_after_a_claim)
    spool.append(path, events(2))

    assert [orjson.loads(line)["request_id"] for line in (claimed[0] or b"").split()] == ["gwreq_1"]
    assert (tmp_path / "usage-1.replaying-77").read_bytes() == claimed[0]
    assert spool.decode_lines(path.read_bytes())[0][0]["request_id"] == "gwreq_2"


def test_an_event_json_cannot_hold_as_is_is_still_encoded() -> None:
    line = spool.encode(
        {"request_id": "gwreq_1", "model": "bad \ud800", "cost": decimal.Decimal("1.5"), "n": 3}
    )
    assert orjson.loads(line) == {
        "request_id": "gwreq_1",
        "model": "bad ?",
        "cost": "1.5",
        "n": 3,
    }


def test_counting_in_small_chunks_finds_every_event(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(spool, "_CHUNK", 7)  # event ends fall across chunk boundaries
    spool.append(tmp_path / "usage-1.jsonl", events(*range(50)))
    assert spool.backlog(tmp_path).spooled == 50
    spool.append(tmp_path / "usage-1.jsonl", events(*range(50, 53)))
    assert spool.backlog(tmp_path).spooled == 53


def test_a_big_spool_file_is_closed_and_the_next_append_starts_a_new_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(spool, "ROTATE_BYTES", 200)
    for number in range(4):
        spool.append(tmp_path / "usage-1.jsonl", events(number, number + 100))

    files = sorted(tmp_path.glob(spool.REPLAY_GLOB))
    assert len(files) == 2  # two appends pass 200 bytes: the file is closed after each pair
    replayed = [e["request_id"] for f in files for e in spool.decode_lines(f.read_bytes())[0]]
    assert sorted(replayed) == sorted(f"gwreq_{n}" for n in (0, 1, 2, 3, 100, 101, 102, 103))
    assert spool.backlog(tmp_path).spooled == 8
