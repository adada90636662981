"""The one upstream HTTP client per worker, behind a small interface.

aiohttp, not httpx: on this path aiohttp measured 2-3x the throughput and half the added
latency of httpx (shared/PERFORMANCE.md; benchmarks/ reproduces it). httpx stays in use for
control-plane calls and tests.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Protocol

import aiohttp

from proxy import egress

# Response headers worth passing back to the client.
FORWARDED_RESPONSE_HEADERS = frozenset(
    {"request-id", "retry-after", "retry-after-ms", "x-should-retry", "anthropic-organization-id"}
)
FORWARDED_RESPONSE_PREFIXES = ("anthropic-ratelimit-",)


# Response header name -> its lower-case bytes if it is passed back to the client, else b"";
# remembered per name (an upstream sends the same few dozen), bounded.
_passed_back: dict[str, bytes] = {}


def _passed_back_name(name: str) -> bytes:
    lowered = name.lower()
    passed = lowered in FORWARDED_RESPONSE_HEADERS or lowered.startswith(
        FORWARDED_RESPONSE_PREFIXES
    )
    encoded = lowered.encode() if passed else b""
    if len(_passed_back) < 1024:
        _passed_back[name] = encoded
    return encoded


class UpstreamResponse(Protocol):
    status: int
    content_type: str
    headers: list[tuple[bytes, bytes]]

    def chunks(self) -> AsyncIterator[bytes]: ...

    async def read(self) -> bytes: ...

    async def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Timeouts:
    connect: float = 10.0
    # Time allowed between two chunks: long thinking pauses happen, so it is generous.
    read: float = 600.0


class HttpResponse:
    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response
        self.status = response.status
        self.content_type = response.headers.get("content-type", "")
        # Every response header, case-insensitive, for adapters that read provider-specific ones
        # (e.g. Bedrock's x-amzn-ErrorType and x-amzn-RequestId); never sent to the client as is.
        self.upstream_headers: Mapping[str, str] = response.headers
        headers = []
        for name, value in response.headers.items():
            lowered = _passed_back.get(name)
            if lowered is None:
                lowered = _passed_back_name(name)
            if lowered:
                headers.append((lowered, value.encode()))
        self.headers = headers

    async def chunks(self) -> AsyncIterator[bytes]:
        async for chunk in self._response.content.iter_any():
            yield chunk

    async def read(self) -> bytes:
        return await self._response.read()

    async def close(self) -> None:
        self._response.release()
        self._response.close()


class UpstreamClient:
    """A lazily opened aiohttp session with pooled keep-alive connections."""

    def __init__(self, timeouts: Timeouts | None = None, pool_size: int = 512) -> None:
        self._timeouts = timeouts or Timeouts()
        self._pool_size = pool_size
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        # Provider base URLs may not reach loopback, private or metadata addresses, whatever
        # their name resolves to by the time of the connection (proxy/egress.py).
        connector = aiohttp.TCPConnector(
            limit=self._pool_size,
            ttl_dns_cache=300,
            keepalive_timeout=30,
            enable_cleanup_closed=True,
            resolver=egress.GuardedResolver(),
            socket_factory=egress.guarded_socket,
        )
        return aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(
                total=None, sock_connect=self._timeouts.connect, sock_read=self._timeouts.read
            ),
            auto_decompress=True,
            skip_auto_headers=("User-Agent",),
            # One session serves every tenant: a cookie an upstream sets must never ride along
            # on another developer's request (and the jar cost CPU on every request).
            cookie_jar=aiohttp.DummyCookieJar(),
        )

    async def post(self, url: str, *, headers: dict[str, str], body: bytes) -> HttpResponse:
        if self._session is None or self._session.closed:
            self._session = self._open()
        # A redirect would carry the provider credentials to wherever the upstream says.
        response = await self._session.post(url, data=body, headers=headers, allow_redirects=False)
        return HttpResponse(response)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
