"""The gateway's usage spool on local disk: spooled events, dead letters, and the backlog.

Plain files, no ORM: the gateway's ledger writer (proxy/usage.py) writes them; the admin, the
metrics and reconciliation read them. Layout of GATEWAY_SPOOL_DIR:

- `usage-<pid>.jsonl`: events the ledger could not take (database down) or that overflowed the
  in-memory queue, one JSON object a line, appended and fsynced, replayed into the ledger later.
  `usage-<pid>-<ns>.jsonl` and `usage-orphan-*.jsonl` wait for a later replay;
  `usage-*.replaying-<pid>` is being replayed.
- `dead/usage-dead-<pid>-<ns>.jsonl`: events the ledger refused because of their content, one a
  line: {"event": {...}, "error": "...", "dead_at": "..."} (or "raw" text for a line that was
  not a readable event). Written once, then only rewritten by a retry or a discard.
- `dead/unreadable-<name>-<ns>`: a spool file that could not be read, kept as it was.
- `dead/discarded/`: dead letters an administrator discarded: kept, no longer counted.

Appends and replay claims take an flock on the file, so a replay (in any process) never reads a
file while an append to it is under way, and an append never lands in a file already claimed.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson
import redis

logger = logging.getLogger("gateway.usage")

SPOOL_GLOB = "usage-*"  # spooled, kept and claimed files alike
REPLAY_GLOB = "usage-*.jsonl"
DEAD_DIR = "dead"
DEAD_GLOB = "usage-dead-*.jsonl"
UNREADABLE_GLOB = "unreadable-*"
DISCARDED_DIR = "discarded"
DATETIME_FIELDS = ("created_at",)
BACKLOG_KEY = "usage-backlog"
_JSON_OPTIONS = orjson.OPT_NON_STR_KEYS
_EVENT_END = b"}\n"  # every encoded event (and dead letter) line ends so; a torn line need not
ROTATE_BYTES = 16 * 1024 * 1024  # a spool file this big is closed; the next append starts one
_CHUNK = 1024 * 1024


# --- what a ledger writer reports back --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Rejected:
    """An event the ledger refused because of its content, and why."""

    event: dict[str, Any]
    error: str


@dataclass(slots=True)
class WriteResult:
    written: int = 0  # offered and accepted (a request id already in the ledger counts)
    rejected: list[Rejected] = field(default_factory=list)


# --- encoding ---------------------------------------------------------------------------------


def encode(event: dict[str, Any]) -> bytes:
    """One event as a JSON line body. Never fails on a value JSON cannot hold: the ledger's own
    cleaning decides later what such a value becomes."""
    try:
        return orjson.dumps(event, default=str, option=_JSON_OPTIONS)
    except TypeError:  # e.g. a lone surrogate in a string, which UTF-8 cannot carry
        return orjson.dumps(_scrubbed(event), default=str, option=_JSON_OPTIONS)


def _scrubbed(value: Any) -> Any:
    if isinstance(value, str):
        return value.encode("utf-8", "replace").decode("utf-8")
    if isinstance(value, dict):
        return {_scrubbed(str(key)): _scrubbed(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_scrubbed(item) for item in value]
    return value


def decode(line: bytes) -> dict[str, Any]:
    event = orjson.loads(line)
    if not isinstance(event, dict):
        raise ValueError("a spool line holds a JSON object")
    for name in DATETIME_FIELDS:
        if isinstance(event.get(name), str):
            event[name] = dt.datetime.fromisoformat(event[name])
    return event


def decode_lines(data: bytes) -> tuple[list[dict[str, Any]], list[bytes]]:
    """The events of a spool file, and the lines that are not events (a line torn by a crash
    mid-append, or damage): those go to the dead letters, never silently away."""
    events: list[dict[str, Any]] = []
    unreadable: list[bytes] = []
    for line in data.splitlines():
        if not line.strip():
            continue
        try:
            events.append(decode(line))
        except ValueError:  # orjson.JSONDecodeError and a bad datetime are both ValueErrors
            unreadable.append(line)
    return events, unreadable


# --- appending and claiming -------------------------------------------------------------------


def _same_file(handle: IO[bytes], path: Path) -> bool:
    try:
        named = path.stat()
    except FileNotFoundError:
        return False
    opened = os.fstat(handle.fileno())
    return (named.st_dev, named.st_ino) == (opened.st_dev, opened.st_ino)


def append(path: Path, events: Sequence[dict[str, Any]]) -> None:
    """Append events to a spool file and fsync. A replay may rename the file between open()
    and the lock: the append then goes to a fresh file under the same name."""
    data = b"".join(encode(event) + b"\n" for event in events)
    path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(10):  # a rename per attempt would need ten replays in a row
        with path.open("ab") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            if not _same_file(handle, path):
                continue
            # The leading newline ends a line torn by a crash of an earlier process that had
            # this pid (containers reuse pids), so the torn line cannot swallow this batch.
            handle.write(b"\n" + data)
            handle.flush()
            os.fsync(handle.fileno())
            if handle.tell() >= ROTATE_BYTES:
                # Still under the lock: later appends start a new file, and a replay never
                # has to hold a whole long outage in memory at once.
                path.rename(path.with_name(f"{path.stem}-{time.time_ns()}.jsonl"))
            return
    raise OSError(f"spool file {path.name} kept being renamed during the append")


def claim(path: Path, claimed: Path) -> bytes | None:
    """Rename a spool file to `claimed` and read it once no append is under way; None when
    another process took it first. An OSError leaves the file at `claimed` if it got there."""
    try:
        path.rename(claimed)
    except FileNotFoundError:
        return None
    with claimed.open("rb") as handle:
        fcntl.flock(handle, fcntl.LOCK_SH)
        return handle.read()


def bury_unreadable(path: Path, spool_dir: Path) -> None:
    """Move a spool file that cannot be read to dead/, so replay goes on with the next one."""
    dead = spool_dir / DEAD_DIR
    dead.mkdir(parents=True, exist_ok=True)
    path.rename(dead / f"unreadable-{path.name}-{time.time_ns()}")


def sync_write(path: Path, lines: Sequence[bytes]) -> None:
    """Write a whole file at once: through a temporary name, fsynced, then renamed."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with temporary.open("wb") as handle:
        handle.write(b"".join(line + b"\n" for line in lines))
        handle.flush()
        os.fsync(handle.fileno())
    temporary.replace(path)


def dead_letter_line(
    *, error: str, event: dict[str, Any] | None = None, raw: bytes | None = None
) -> bytes:
    entry: dict[str, Any] = {"error": error, "dead_at": dt.datetime.now(dt.UTC)}
    if event is not None:
        entry["event"] = event
    if raw is not None:
        entry["raw"] = raw.decode("utf-8", "replace")
    return encode(entry)


def write_dead_letters(spool_dir: Path, lines: Sequence[bytes]) -> Path:
    """A new dead-letter file (never appended to later: retry and discard rewrite files whole)."""
    dead = spool_dir / DEAD_DIR
    dead.mkdir(parents=True, exist_ok=True)
    path = dead / f"usage-dead-{os.getpid()}-{time.time_ns()}.jsonl"
    sync_write(path, lines)
    return path


@contextlib.contextmanager
def locked(path: Path) -> Iterator[IO[bytes] | None]:
    """An existing file opened and locked for a rewrite; None if it went away meanwhile."""
    for _ in range(10):
        try:
            handle = path.open("rb")
        except FileNotFoundError:
            break
        with handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            if _same_file(handle, path):
                yield handle
                return
    yield None


# --- the backlog: events waiting on this host's disk ------------------------------------------


@dataclass(frozen=True, slots=True)
class Backlog:
    spooled: int = 0  # waiting for a replay
    dead: int = 0  # dead-lettered (an unreadable spool file counts one)
    queued: int = 0  # in a gateway's memory beyond one batch (the ledger is behind)

    @property
    def total(self) -> int:
        return self.spooled + self.dead + self.queued


@dataclass(slots=True)
class _Counted:
    head: bytes
    size: int
    events: int


_counted: dict[tuple[int, int], _Counted] = {}
_counting = threading.Lock()


def _count_events(path: Path, seen: set[tuple[int, int]]) -> int:
    """Event lines in a file, reading only what was appended since the last count (files are
    only appended to or replaced whole; a replay renames them, which keeps the inode)."""
    with path.open("rb") as handle:
        status = os.fstat(handle.fileno())
        identity = (status.st_dev, status.st_ino)
        seen.add(identity)
        head = handle.read(64)
        known = _counted.get(identity)
        if known is None or known.head != head[: len(known.head)] or status.st_size < known.size:
            known = _Counted(head, 0, 0)
        # One byte back: an event end split across the previous count's end is counted now.
        added, known.size = _count_from(handle, max(known.size - 1, 0), status.st_size)
        known.events += added
        known.head = head
        _counted[identity] = known
        return known.events


def _count_from(handle: IO[bytes], start: int, end: int) -> tuple[int, int]:
    """Event ends between two offsets, read in chunks; and where the reading stopped."""
    handle.seek(start)
    count, last, position = 0, b"", start
    while position < end:
        chunk = handle.read(min(_CHUNK, end - position))
        if not chunk:
            break
        count += chunk.count(_EVENT_END) + (last == b"}" and chunk[:1] == b"\n")
        last = chunk[-1:]
        position += len(chunk)
    return count, position


def backlog(spool_dir: Path) -> Backlog:
    """Spooled and dead-lettered events under `spool_dir`; cheap to call every few seconds."""
    seen: set[tuple[int, int]] = set()
    spooled = dead = 0
    with _counting:
        for path in list_files(spool_dir, SPOOL_GLOB):
            with contextlib.suppress(OSError):  # replayed and removed meanwhile
                spooled += _count_events(path, seen)
        for path in list_files(spool_dir / DEAD_DIR, DEAD_GLOB):
            with contextlib.suppress(OSError):
                dead += _count_events(path, seen)
        dead += len(list_files(spool_dir / DEAD_DIR, UNREADABLE_GLOB))
        for identity in set(_counted) - seen:
            del _counted[identity]
    return Backlog(spooled, dead)


def list_files(directory: Path, pattern: str) -> list[Path]:
    """Regular files matching `pattern`, sorted; none if the directory is missing."""
    try:
        return sorted(path for path in directory.glob(pattern) if path.is_file())
    except OSError:
        return []


# --- advertising the backlog in Redis (reconciliation may run on another host) ----------------


def backlog_key(prefix: str, gateway: str) -> str:
    return f"{prefix}:{BACKLOG_KEY}:{gateway}"


class RedisBacklogBeacon:
    """Keeps `<prefix>:usage-backlog:<host>:<pid>` (a hash: spooled, dead, queued) in Redis while
    this gateway process has a backlog, with a TTL the publisher refreshes; deleted once empty.
    A process that dies takes its key with it after the TTL."""

    def __init__(self, url: str, *, prefix: str, ttl_seconds: int) -> None:
        self.key = backlog_key(prefix, f"{socket.gethostname()}:{os.getpid()}")
        self._ttl = ttl_seconds
        self._client = redis.Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0)
        self._published = False
        self._warned_at = -float("inf")

    def publish(self, backlog: Backlog) -> None:
        """Never raises: a Redis outage must not stop the ledger writer."""
        try:
            if backlog.total:
                pipe = self._client.pipeline(transaction=True)
                pipe.hset(
                    self.key,
                    mapping={
                        "spooled": backlog.spooled,
                        "dead": backlog.dead,
                        "queued": backlog.queued,
                    },
                )
                pipe.expire(self.key, self._ttl)
                pipe.execute()
                self._published = True
            elif self._published:
                self._client.delete(self.key)
                self._published = False
        except redis.RedisError:
            if time.monotonic() - self._warned_at >= 60:
                self._warned_at = time.monotonic()
                logger.warning("could not advertise the usage backlog in Redis", exc_info=True)

    def close(self) -> None:
        self._client.close()


def advertised_backlogs(client: redis.Redis, prefix: str) -> dict[str, Backlog]:
    """Every gateway's advertised backlog, by gateway (host:pid)."""
    head = backlog_key(prefix, "")
    found: dict[str, Backlog] = {}
    for raw_key in client.scan_iter(match=f"{head}*", count=500):
        key = raw_key.decode() if isinstance(raw_key, bytes) else str(raw_key)
        values = client.hgetall(key)
        if not values:
            continue
        numbers = {_text(name): int(value) for name, value in values.items()}
        found[key.removeprefix(head)] = Backlog(
            numbers.get("spooled", 0), numbers.get("dead", 0), numbers.get("queued", 0)
        )
    return found


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def backlog_beacon() -> RedisBacklogBeacon | None:
    """The beacon for this gateway per settings; None on the embedded default (no Redis):
    reconciliation then runs in the gateway's own process and reads the spool dir itself."""
    from django.conf import settings

    if not settings.REDIS_URL:
        return None
    ttl = max(60, int(4 * settings.GATEWAY_SPOOL_REPLAY_SECONDS))
    return RedisBacklogBeacon(
        settings.REDIS_URL, prefix=settings.GATEWAY_COUNTER_PREFIX, ttl_seconds=ttl
    )


def entry_id(file_name: str, line: bytes) -> str:
    """A dead letter's id: stable while lines around it are retried or discarded."""
    return f"{file_name}:{hashlib.blake2b(line, digest_size=8).hexdigest()}"
