"""httpx transports that connect only to addresses the outbound guard (governance/outbound.py)
allows, checked on the very addresses the connection uses.

Checking a URL's host and then letting httpx connect resolves the name twice: a name re-pointed
between the two lookups (DNS rebinding: public for the check, 169.254.169.254 for the
connection) reaches a forbidden address. Here the connection resolves the name once, checks
every address and connects to those addresses. TLS is unchanged: httpcore still verifies the
certificate and sends SNI for the URL's host name, not for the address.

Two clients need it: alert webhooks (httpx, sync: telemetry/channels.py) and upstream MCP
servers over Streamable HTTP (httpx2, the MCP SDK's client, async: proxy/mcp/upstream.py). The
provider client (aiohttp) has its own hooks (proxy/egress.py). httpx has no public hook for a
network backend (encode/httpx#3749 proposes one), so each transport's connection pool is
rebuilt with one of ours; httpx, httpx2 and their httpcores are pinned, and
tests/governance/test_guarded_http.py proves the guard on real sockets. Neither transport
takes a proxy from the environment, like the provider client.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import anyio.to_thread
import httpcore
import httpcore2
import httpx
import httpx2
from httpcore._backends.base import SOCKET_OPTION
from httpcore2._types import SOCKET_OPTION as SOCKET_OPTION2

from governance import outbound


def _checked(host: str, port: int) -> list[str]:
    """The addresses of `host`, every one allowed; ForbiddenDestination names a forbidden one
    (the caller reports it); a name that does not resolve is an OSError."""
    addresses = outbound.resolve(host, port)
    outbound.refuse_forbidden(addresses)
    return addresses


class _GuardedBackend(httpcore.SyncBackend):
    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        try:
            addresses = _checked(host, port)
        except OSError as exc:  # as httpcore reports a name that does not resolve
            raise httpcore.ConnectError(f"cannot resolve the host ({type(exc).__name__})") from exc
        failure: httpcore.ConnectError | None = None
        for address in addresses:  # in turn, as socket.create_connection does
            try:
                return super().connect_tcp(address, port, timeout, local_address, socket_options)
            except httpcore.ConnectError as exc:
                failure = exc
        raise failure or httpcore.ConnectError("the host resolved to no address")


class _GuardedAsyncBackend(httpcore2.AnyIOBackend):
    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (the interface httpcore2 calls)
        local_address: str | None = None,
        socket_options: Iterable[SOCKET_OPTION2] | None = None,
    ) -> httpcore2.AsyncNetworkStream:
        try:
            addresses = await anyio.to_thread.run_sync(_checked, host, port)
        except OSError as exc:
            raise httpcore2.ConnectError(f"cannot resolve the host ({type(exc).__name__})") from exc
        failure: httpcore2.ConnectError | None = None
        for address in addresses:
            try:
                return await super().connect_tcp(
                    address, port, timeout, local_address, socket_options
                )
            except httpcore2.ConnectError as exc:
                failure = exc
        raise failure or httpcore2.ConnectError("the host resolved to no address")


# The pool size httpx and httpx2 build by default (httpcore's own defaults are 10 connections,
# kept alive forever).
POOL_SIZE: dict[str, Any] = {
    "max_connections": 100,
    "max_keepalive_connections": 20,
    "keepalive_expiry": 5.0,
}


def guarded_transport() -> httpx.HTTPTransport:
    """For an httpx.Client: ForbiddenDestination comes out of its requests as it is."""
    transport = httpx.HTTPTransport()
    transport._pool = httpcore.ConnectionPool(
        ssl_context=httpx.create_ssl_context(), network_backend=_GuardedBackend(), **POOL_SIZE
    )
    return transport


def guarded_async_transport() -> httpx2.AsyncHTTPTransport:
    """For an httpx2.AsyncClient (the MCP SDK's)."""
    transport = httpx2.AsyncHTTPTransport()
    transport._pool = httpcore2.AsyncConnectionPool(
        ssl_context=httpx2.create_ssl_context(),
        network_backend=_GuardedAsyncBackend(),
        **POOL_SIZE,
    )
    return transport
