"""Usage from Anthropic responses: JSON bodies and SSE streams, scanned as bytes pass by.

Streaming rule (PROTOCOLS.md 1.4): take message_start's usage, then let every non-null value
of each message_delta usage OVERWRITE it (they are cumulative; never add). If the stream is
cut short, the last values seen are what is billed.
"""

from __future__ import annotations

from typing import Any

import orjson

from governance.pricing import Usage

_INTERESTING = (b'"message_start"', b'"message_delta"', b'"error"')


class UsageTally:
    def __init__(self) -> None:
        self.input_tokens = 0
        self.output_tokens = 0
        self.cache_read_tokens = 0
        self.cache_creation_tokens = 0
        self.cache_write_1h_tokens: int | None = None
        self.model = ""
        self.upstream_message_id = ""
        self.stop_reason = ""
        self.error_type = ""
        self.error_message = ""
        self.saw_usage = False
        self.completed = False
        self._pending = b""

    # --- JSON ---------------------------------------------------------------------------

    def feed_json(self, body: bytes) -> None:
        try:
            message = orjson.loads(body)
        except orjson.JSONDecodeError:
            return
        if not isinstance(message, dict):
            return
        if message.get("type") == "error":
            self._error(message)
            return
        self._start(message)
        self.completed = True

    # --- SSE ------------------------------------------------------------------------------

    def feed_sse(self, chunk: bytes) -> None:
        """Scan one chunk; only frames that can carry usage or errors are decoded."""
        data = self._pending + chunk if self._pending else chunk
        if b"\r" in data:  # SSE allows CRLF line ends; a "\r" left pending joins its "\n" here
            data = data.replace(b"\r\n", b"\n")
        start = 0
        while True:
            end = data.find(b"\n\n", start)
            if end < 0:
                break
            frame = data[start:end]
            start = end + 2
            if any(marker in frame for marker in _INTERESTING):
                self._frame(frame)
        self._pending = data[start:]

    def _frame(self, frame: bytes) -> None:
        for line in frame.split(b"\n"):
            if line.startswith(b"data:"):
                try:
                    event = orjson.loads(line[5:].strip())
                except orjson.JSONDecodeError:
                    return
                if isinstance(event, dict):
                    self._event(event)
                return

    def _event(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "message_start" and isinstance(event.get("message"), dict):
            self._start(event["message"])
        elif kind == "message_delta":
            delta = event.get("delta")
            if isinstance(delta, dict) and delta.get("stop_reason"):
                self.stop_reason = str(delta["stop_reason"])
                self.completed = True
            usage = event.get("usage")
            if isinstance(usage, dict):
                self._overwrite(usage)
        elif kind == "error":
            self._error(event)

    def _start(self, message: dict[str, Any]) -> None:
        self.model = str(message.get("model") or self.model)
        self.upstream_message_id = str(message.get("id") or "")
        if message.get("stop_reason"):
            self.stop_reason = str(message["stop_reason"])
        usage = message.get("usage")
        if isinstance(usage, dict):
            self._overwrite(usage)

    def _overwrite(self, usage: dict[str, Any]) -> None:
        self.saw_usage = True
        for source, attr in (
            ("input_tokens", "input_tokens"),
            ("output_tokens", "output_tokens"),
            ("cache_read_input_tokens", "cache_read_tokens"),
            ("cache_creation_input_tokens", "cache_creation_tokens"),
        ):
            value = usage.get(source)
            if isinstance(value, int):
                setattr(self, attr, value)
        split = usage.get("cache_creation")
        if isinstance(split, dict) and isinstance(split.get("ephemeral_1h_input_tokens"), int):
            self.cache_write_1h_tokens = split["ephemeral_1h_input_tokens"]

    def _error(self, event: dict[str, Any]) -> None:
        error = event.get("error")
        if isinstance(error, dict):
            self.error_type = str(error.get("type") or "api_error")
            self.error_message = str(error.get("message") or "")
        else:
            self.error_type = "api_error"

    # --- result ---------------------------------------------------------------------------

    def usage(self) -> Usage:
        """Token counts by price category. Without a 5m/1h split, cache writes count as 5m."""
        one_hour = min(self.cache_write_1h_tokens or 0, self.cache_creation_tokens)
        return Usage(
            input_tokens=self.input_tokens,
            output_tokens=self.output_tokens,
            cache_write_5m_tokens=self.cache_creation_tokens - one_hour,
            cache_write_1h_tokens=one_hour,
            cache_read_tokens=self.cache_read_tokens,
        )
