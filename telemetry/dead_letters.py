"""Dead-lettered usage events (telemetry/spool.py): listed, retried and discarded from the admin.

A retry writes the chosen events through the ledger's cleaning and isolating writer and rewrites
their file without the ones that landed; the ones refused again stay, with the new error. A
discard moves entries to dead/discarded/ (kept on disk, no longer counted as a backlog, so
reconciliation may lower counters again). Files are rewritten under an flock, whole.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from telemetry import spool
from telemetry.spool import WriteResult

logger = logging.getLogger("gateway.usage")

Write = Callable[[Sequence[dict[str, Any]]], WriteResult]
UNREADABLE_FILE = "unreadable spool file"


@dataclass(frozen=True, slots=True)
class DeadLetter:
    id: str
    file: str
    error: str
    dead_at: str
    request_id: str = ""
    created_at: str = ""
    organization_id: str = ""
    event: dict[str, Any] | None = None  # None: a line or file that never was a readable event


@dataclass(slots=True)
class Listing:
    entries: list[DeadLetter] = field(default_factory=list)  # the first `limit`, oldest first
    total: int = 0
    files: int = 0
    errors: list[tuple[str, int]] = field(default_factory=list)  # count by error, most first


@dataclass(slots=True)
class Outcome:
    written: int = 0
    failed: int = 0  # still refused, or not an event at all: still dead-lettered
    discarded: int = 0


def _parse(file_name: str, line: bytes) -> DeadLetter:
    ident = spool.entry_id(file_name, line)
    try:
        entry = orjson.loads(line)
    except orjson.JSONDecodeError:
        return DeadLetter(ident, file_name, "unreadable dead letter", "")
    if not isinstance(entry, dict):
        return DeadLetter(ident, file_name, "unreadable dead letter", "")
    event = entry.get("event")
    event = event if isinstance(event, dict) else None
    found = event or {}
    return DeadLetter(
        id=ident,
        file=file_name,
        error=str(entry.get("error", "")),
        dead_at=str(entry.get("dead_at", "")),
        request_id=str(found.get("request_id", "")),
        created_at=str(found.get("created_at", "")),
        organization_id=str(found.get("organization_id") or ""),
        event=event,
    )


def _dead_files(spool_dir: Path) -> list[Path]:
    return spool.list_files(spool_dir / spool.DEAD_DIR, spool.DEAD_GLOB)


def _unreadable_files(spool_dir: Path) -> list[Path]:
    return spool.list_files(spool_dir / spool.DEAD_DIR, spool.UNREADABLE_GLOB)


def _unreadable_entry(path: Path) -> DeadLetter:
    when = dt.datetime.fromtimestamp(path.stat().st_mtime, dt.UTC).isoformat()
    return DeadLetter(f"{path.name}:file", path.name, UNREADABLE_FILE, when)


def _lines(data: bytes) -> list[bytes]:
    return [line for line in data.splitlines() if line.strip()]


def _entries(spool_dir: Path) -> Iterator[DeadLetter]:
    for path in _dead_files(spool_dir):
        try:
            data = path.read_bytes()
        except FileNotFoundError:  # retried or discarded meanwhile
            continue
        for line in _lines(data):
            yield _parse(path.name, line)
    for path in _unreadable_files(spool_dir):
        try:
            yield _unreadable_entry(path)
        except FileNotFoundError:
            continue


def list_dead_letters(spool_dir: Path, *, limit: int = 500) -> Listing:
    """What an administrator sees: every dead letter counted, the first `limit` listed."""
    listing = Listing()
    errors: Counter[str] = Counter()
    files: set[str] = set()
    for entry in _entries(spool_dir):
        listing.total += 1
        files.add(entry.file)
        errors[entry.error] += 1
        if len(listing.entries) < limit:
            listing.entries.append(entry)
    listing.files = len(files)
    listing.errors = errors.most_common()
    return listing


def retry(spool_dir: Path, ids: set[str] | None, *, write: Write) -> Outcome:
    """Write the chosen dead letters (every one with `ids` None) to the ledger again. A
    connection error is raised and leaves every file as it was."""
    outcome = Outcome()
    for path in _dead_files(spool_dir):
        with spool.locked(path) as handle:
            if handle is not None:
                _retry_file(path, _lines(handle.read()), ids, write, outcome)
    for path in _unreadable_files(spool_dir):
        if ids is None or f"{path.name}:file" in ids:
            _retry_unreadable(path, spool_dir, write, outcome)
    return outcome


def _retry_file(
    path: Path, lines: list[bytes], ids: set[str] | None, write: Write, outcome: Outcome
) -> None:
    chosen: list[tuple[int, DeadLetter]] = []
    for index, line in enumerate(lines):
        entry = _parse(path.name, line)
        if ids is None or entry.id in ids:
            chosen.append((index, entry))
    events = [entry.event for _, entry in chosen if entry.event is not None]
    if not chosen:
        return
    result = write(events) if events else WriteResult()
    refused = {id(rejected.event): rejected.error for rejected in result.rejected}
    kept = list(lines)
    for index, entry in chosen:
        if entry.event is None:
            outcome.failed += 1  # nothing to write: only a discard takes it away
        elif id(entry.event) in refused:
            outcome.failed += 1
            kept[index] = spool.dead_letter_line(error=refused[id(entry.event)], event=entry.event)
        else:
            outcome.written += 1
            kept[index] = b""
    _rewrite(path, [line for line in kept if line])


def _retry_unreadable(path: Path, spool_dir: Path, write: Write, outcome: Outcome) -> None:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return
    except OSError:
        outcome.failed += 1
        return
    events, unreadable = spool.decode_lines(data)
    result = write(events)
    lines = [spool.dead_letter_line(error=r.error, event=r.event) for r in result.rejected]
    lines += [spool.dead_letter_line(error="unreadable spool line", raw=raw) for raw in unreadable]
    if lines:
        spool.write_dead_letters(spool_dir, lines)
    path.unlink(missing_ok=True)
    outcome.written += len(events) - len(result.rejected)
    outcome.failed += len(lines)


def discard(spool_dir: Path, ids: set[str]) -> Outcome:
    """Move the chosen dead letters to dead/discarded/: kept, no longer counted."""
    outcome = Outcome()
    target = spool_dir / spool.DEAD_DIR / spool.DISCARDED_DIR
    target.mkdir(parents=True, exist_ok=True)
    for path in _dead_files(spool_dir):
        with spool.locked(path) as handle:
            if handle is None:
                continue
            lines = _lines(handle.read())
            chosen = [spool.entry_id(path.name, line) in ids for line in lines]
            gone = [line for line, out in zip(lines, chosen, strict=True) if out]
            if gone:
                spool.sync_write(target / f"discarded-{time.time_ns()}-{path.name}", gone)
                _rewrite(path, [line for line, out in zip(lines, chosen, strict=True) if not out])
                outcome.discarded += len(gone)
    for path in _unreadable_files(spool_dir):
        if f"{path.name}:file" in ids:
            path.rename(target / path.name)
            outcome.discarded += 1
    if outcome.discarded:
        logger.warning("discarded %d usage dead letters", outcome.discarded)
    return outcome


def _rewrite(path: Path, lines: list[bytes]) -> None:
    if lines:
        spool.sync_write(path, lines)
    else:
        path.unlink(missing_ok=True)
