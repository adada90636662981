"""Server-sent events, decoded incrementally from arbitrary byte chunks, and encoded.

A frame may be split anywhere, even inside a UTF-8 character or between the CR and LF of a
CRLF; CR, LF and CRLF all end a line (the SSE specification). Bytes are only decoded once a
whole frame has arrived.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, NamedTuple

import orjson

OPENAI_DONE = b"data: [DONE]\n\n"


class Frame(NamedTuple):
    event: str  # "" when the frame names none (OpenAI's frames)
    data: str  # the data lines joined by "\n"; "" for a frame of comments only
    comment: bool  # a frame made only of ": …" lines (keep-alives)


class SSEDecoder:
    def __init__(self) -> None:
        self._buffer = bytearray()
        self._held_cr = False

    def feed(self, chunk: bytes) -> list[Frame]:
        if not chunk:
            return []
        if self._held_cr:
            chunk = b"\r" + chunk
        # A CR at the end may be the first half of a CRLF: wait for the next chunk.
        self._held_cr = chunk.endswith(b"\r")
        if self._held_cr:
            chunk = chunk[:-1]
        if b"\r" in chunk:
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        search_from = max(len(self._buffer) - 1, 0)
        self._buffer += chunk
        frames: list[Frame] = []
        start = 0
        while (end := self._buffer.find(b"\n\n", max(start, search_from))) >= 0:
            frame = _parse(bytes(self._buffer[start:end]))
            if frame is not None:
                frames.append(frame)
            start = end + 2
        del self._buffer[:start]
        return frames

    def close(self) -> list[Frame]:
        """The last frame, even without its blank line (some servers end that way)."""
        rest = bytes(self._buffer)
        self._buffer.clear()
        self._held_cr = False
        frame = _parse(rest.strip(b"\n"))
        return [frame] if frame is not None else []


class StreamConverter(ABC):
    """Converts one stream of SSE frames into another, from byte chunks cut anywhere.

    `feed` hands each whole frame to `_frame`; `close` (the upstream body ended) hands over the
    last one, then lets `_body_ended` end a stream that has not finished (normally, or as cut
    short). Nothing is written before the first frame, so a caller can still fail over."""

    def __init__(self) -> None:
        self._decoder = SSEDecoder()
        self.started = False
        self.finished = False

    def feed(self, chunk: bytes) -> bytes:
        out = bytearray()
        for frame in self._decoder.feed(chunk):
            self._frame(frame, out)
        return bytes(out)

    def close(self) -> bytes:
        out = bytearray()
        for frame in self._decoder.close():
            self._frame(frame, out)
        if not self.finished:
            self._body_ended(out)
        return bytes(out)

    @abstractmethod
    def _frame(self, frame: Frame, out: bytearray) -> None: ...

    @abstractmethod
    def _body_ended(self, out: bytearray) -> None: ...


def json_object(data: str) -> dict[str, Any] | None:
    """A frame's data as a JSON object; None for anything else, which converters skip."""
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def _parse(raw: bytes) -> Frame | None:
    if not raw:
        return None
    event = ""
    data: list[str] = []
    comment = False
    for line in raw.decode("utf-8", errors="replace").split("\n"):
        field, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if not field:
            comment = comment or line.startswith(":")
        elif field == "event":
            event = value
        elif field == "data":
            data.append(value)
    if not data and not event:
        return Frame("", "", True) if comment else None
    return Frame(event, "\n".join(data), False)


def anthropic_event(payload: dict[str, Any]) -> bytes:
    return (
        b"event: " + str(payload["type"]).encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"
    )


def openai_data(payload: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"
