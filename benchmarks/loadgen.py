"""A lean async HTTP/1.1 load generator that times every request and its first body byte.

Each of `concurrency` workers keeps one keep-alive connection and sends the same pre-built
request bytes back to back until the duration (or request cap) is reached. The client is a bare
asyncio protocol rather than aiohttp: it costs a few microseconds per request, so it neither
starves the gateway's measurements nor adds noise of its own, and the same client measures the
direct and the through-gateway path (so its own cost cancels out in "added" latency).

Timing per request: `latency` from just before the request is written until the last byte of
the response; `ttfb` until the first byte of the response BODY (for SSE: the first event).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field


class ResponseError(Exception):
    pass


@dataclass(slots=True)
class Sample:
    latency: float
    ttfb: float
    status: int
    size: int


@dataclass
class CellResult:
    samples: list[Sample] = field(default_factory=list)
    elapsed: float = 0.0
    errors: int = 0
    first_error: str = ""

    @property
    def ok(self) -> list[Sample]:
        return [s for s in self.samples if s.status == 200]

    @property
    def requests_per_second(self) -> float:
        return len(self.samples) / self.elapsed if self.elapsed else 0.0


def build_request(
    *, host: str, port: int, path: str, headers: list[tuple[str, str]], body: bytes
) -> bytes:
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}"]
    lines += [f"{name}: {value}" for name, value in headers]
    lines += [f"Content-Length: {len(body)}", "", ""]
    return "\r\n".join(lines).encode("latin-1") + body


class _ClientProtocol(asyncio.Protocol):
    """One keep-alive connection; one request in flight at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._waiter: asyncio.Future[Sample] | None = None
        self._closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._reset()

    def _reset(self) -> None:
        self._buffer = bytearray()
        self._started = 0.0
        self._first_body = 0.0
        self._status = 0
        self._body_at = -1  # offset of the body in the buffer, once the head is parsed
        self._length: int | None = None  # content-length, or None for chunked
        self._scan = 0  # chunked: offset of the next chunk-size line

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(ResponseError(f"connection lost: {exc}"))
        if not self._closed.done():
            self._closed.set_result(None)

    def request(self, data: bytes) -> asyncio.Future[Sample]:
        assert self.transport is not None
        self._reset()
        self._waiter = asyncio.get_running_loop().create_future()
        self._started = time.perf_counter()
        self.transport.write(data)
        return self._waiter

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        self._buffer += data
        try:
            self._progress(now)
        except (ResponseError, ValueError, IndexError) as error:
            if self._waiter is not None and not self._waiter.done():
                self._waiter.set_exception(ResponseError(f"unreadable response: {error}"))

    def _progress(self, now: float) -> None:
        if self._body_at < 0 and not self._parse_head():
            return
        if self._first_body == 0.0 and len(self._buffer) > self._body_at:
            self._first_body = now
        if self._complete():
            waiter, self._waiter = self._waiter, None
            if waiter is not None and not waiter.done():
                waiter.set_result(
                    Sample(
                        latency=now - self._started,
                        ttfb=(self._first_body or now) - self._started,
                        status=self._status,
                        size=len(self._buffer) - self._body_at,
                    )
                )

    def _parse_head(self) -> bool:
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            return False
        head = bytes(self._buffer[:end]).decode("latin-1")
        lines = head.split("\r\n")
        self._status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        self._body_at = self._scan = end + 4
        if "content-length" in headers:
            self._length = int(headers["content-length"])
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            self._length = None
        else:
            raise ResponseError("response has neither content-length nor chunked encoding")
        return True

    def _complete(self) -> bool:
        if self._length is not None:
            return len(self._buffer) - self._body_at >= self._length
        buffer = self._buffer
        while True:
            line_end = buffer.find(b"\r\n", self._scan)
            if line_end < 0:
                return False
            size = int(bytes(buffer[self._scan : line_end]).split(b";", 1)[0], 16)
            chunk_end = line_end + 2 + size + 2
            if len(buffer) < chunk_end:
                return False
            self._scan = chunk_end
            if size == 0:
                return True

    async def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
            await self._closed


async def _worker(
    *,
    host: str,
    port: int,
    request: bytes,
    deadline: float,
    budget: list[int],
    result: CellResult,
) -> None:
    loop = asyncio.get_running_loop()
    _, protocol = await loop.create_connection(_ClientProtocol, host, port)
    try:
        while budget[0] > 0 and time.perf_counter() < deadline:
            budget[0] -= 1
            try:
                sample = await protocol.request(request)
            except ResponseError as error:
                result.errors += 1
                result.first_error = result.first_error or str(error)
                return
            result.samples.append(sample)
            if sample.status != 200:
                result.errors += 1
                result.first_error = result.first_error or f"HTTP {sample.status}"
    finally:
        await protocol.close()


async def run(
    *,
    host: str,
    port: int,
    request: bytes,
    concurrency: int,
    duration: float,
    max_requests: int = 10_000_000,
) -> CellResult:
    """Send `request` from `concurrency` connections for `duration` seconds (or the cap)."""
    result = CellResult()
    budget = [max_requests]
    started = time.perf_counter()
    deadline = started + duration
    await asyncio.gather(
        *(
            _worker(
                host=host,
                port=port,
                request=request,
                deadline=deadline,
                budget=budget,
                result=result,
            )
            for _ in range(concurrency)
        )
    )
    result.elapsed = time.perf_counter() - started
    return result


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of unsorted values (0.0 when there are none)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = min(len(ordered) - 1, max(0, round(fraction * len(ordered) + 0.5) - 1))
    return ordered[rank]
