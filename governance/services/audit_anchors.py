"""Anchors: the audit chain's head, exported outside the database on a schedule.

Each export appends `{"event_id", "hash", "at"}` as one JSON line to GATEWAY_AUDIT_ANCHOR_FILE
(only when the head moved since the last line) and logs it at INFO, so log shipping keeps a
second copy. `verify_chain` then checks that every anchored (event id, hash) is still in the
chain: whoever can write the database, and even holds the HMAC key, cannot rewrite history
before the last export without the anchors telling.

The file belongs to one database: a fresh database starts with a fresh file.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.utils import timezone

from governance.models import AuditChainHead

logger = logging.getLogger("gateway.audit")

TAIL_BYTES = 4096  # an anchor line is about 120 bytes
# Stands for an event anchored twice with different hashes: no event's hash equals it.
CONFLICTING = "conflicting anchors"


@dataclass(frozen=True, slots=True)
class Anchor:
    event_id: int
    hash: str
    at: str  # ISO 8601, UTC


@dataclass(frozen=True, slots=True)
class ExportResult:
    anchor: Anchor | None  # None: the chain is empty
    appended: bool


def anchor_file() -> Path:
    return Path(settings.GATEWAY_AUDIT_ANCHOR_FILE)


def export_anchor(*, now: dt.datetime | None = None, path: Path | None = None) -> ExportResult:
    """Log the chain's head and append it to the anchor file if it moved since the last line."""
    head = AuditChainHead.objects.filter(pk=1).first()
    if head is None or head.last_event_id is None:
        return ExportResult(None, False)
    moment = (now or timezone.now()).astimezone(dt.UTC)
    anchor = Anchor(head.last_event_id, head.last_hash, moment.isoformat())
    logger.info("audit anchor: event %s hash %s at %s", anchor.event_id, anchor.hash, anchor.at)
    path = path or anchor_file()
    last = _last_anchor(path)
    if last is not None and (last.event_id, last.hash) == (anchor.event_id, anchor.hash):
        return ExportResult(anchor, False)
    _append(path, anchor)
    return ExportResult(anchor, True)


def _append(path: Path, anchor: Anchor) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps({"event_id": anchor.event_id, "hash": anchor.hash, "at": anchor.at})
    # One short write in append mode: lines of several processes never interleave.
    with path.open("a", encoding="utf-8") as file:
        file.write(line + "\n")
        file.flush()
        os.fsync(file.fileno())


def _parse(line: str) -> Anchor | None:
    try:
        data = json.loads(line)
        return Anchor(int(data["event_id"]), str(data["hash"]), str(data.get("at", "")))
    except (ValueError, TypeError, KeyError):
        return None


def _last_anchor(path: Path) -> Anchor | None:
    try:
        with path.open("rb") as file:
            file.seek(0, os.SEEK_END)
            file.seek(max(file.tell() - TAIL_BYTES, 0))
            tail = file.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return None
    lines = [line for line in tail.splitlines() if line.strip()]
    return _parse(lines[-1]) if lines else None


def read_anchors(path: Path | None = None) -> list[Anchor]:
    """Every readable line of the anchor file, oldest first (none if there is no file)."""
    path = path or anchor_file()
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return []
    anchors = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        anchor = _parse(line)
        if anchor is None:
            logger.warning("audit anchor file %s: line %d is unreadable", path, number)
            continue
        anchors.append(anchor)
    return anchors


def anchored_hashes(path: Path | None = None) -> dict[int, str]:
    """{event id: anchored hash}; an event anchored with two different hashes maps to a value
    that matches nothing, since history changed between the two exports."""
    hashes: dict[int, str] = {}
    for anchor in read_anchors(path):
        known = hashes.setdefault(anchor.event_id, anchor.hash)
        if known != anchor.hash:
            hashes[anchor.event_id] = CONFLICTING
    return hashes
