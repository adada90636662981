"""The outbound guard (governance/outbound.py) where alert webhooks connect.

Checking a webhook's host and then letting httpx connect resolved the name twice: a name
re-pointed between the two lookups (DNS rebinding: public for the check, 169.254.169.254 for
the connection) reached a forbidden address. Here the connection resolves the name once, checks
every address, and connects to those very addresses. TLS is unchanged: httpcore still verifies
the certificate and sends SNI for the URL's host name, not for the address.

httpx has no public hook for this (encode/httpx#3749 proposes one), so the transport's
connection pool is rebuilt with a network backend of our own: httpx and httpcore are pinned,
and tests/telemetry/test_channels.py proves the guard on a real socket.
"""

from __future__ import annotations

from collections.abc import Iterable

import httpcore
import httpx
from httpcore._backends.base import SOCKET_OPTION

from governance import outbound


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
            addresses = outbound.resolve(host, port)
        except OSError as exc:  # as httpcore reports a name that does not resolve
            raise httpcore.ConnectError(f"cannot resolve the host ({type(exc).__name__})") from exc
        outbound.refuse_forbidden(addresses)  # ForbiddenDestination, raised through httpx
        failure: httpcore.ConnectError | None = None
        for address in addresses:
            try:
                return super().connect_tcp(address, port, timeout, local_address, socket_options)
            except httpcore.ConnectError as exc:  # the next address, as create_connection does
                failure = exc
        raise failure or httpcore.ConnectError("the host resolved to no address")


def guarded_transport() -> httpx.HTTPTransport:
    """An httpx transport (no proxy from the environment, like the provider client) that
    connects only to addresses the outbound guard allows."""
    transport = httpx.HTTPTransport()
    transport._pool = httpcore.ConnectionPool(
        ssl_context=httpx.create_ssl_context(),
        network_backend=_GuardedBackend(),
    )
    return transport
