"""The outbound guard (governance/outbound.py) where the upstream client connects.

A base URL was checked when it was saved, but a name can be re-pointed afterwards (DNS
rebinding: public when validated, 169.254.169.254 on the next lookup). So every lookup the
client makes is checked by GuardedResolver, and every socket it opens by guarded_socket: the
latter also covers literal IP addresses, for which aiohttp never calls the resolver. Both run
once per new connection (lookups are cached for the connector's DNS TTL), never per request.
"""

from __future__ import annotations

import errno
import logging
import socket

from aiohappyeyeballs import AddrInfoType
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from governance import outbound

logger = logging.getLogger("gateway.egress")


class ForbiddenAddressError(OSError):
    """aiohttp reports an OSError raised while resolving or connecting as a connection error,
    which the forwarding code answers like any unreachable upstream."""

    def __init__(self, address: str) -> None:
        super().__init__(errno.EACCES, f"refused to connect to {address}: not a public address")
        # The client sees a plain 502; the operator needs to know why (never the URL: the
        # address is all that is named).
        logger.warning(
            "upstream connection to %s refused: not a public address "
            "(allow its network in GATEWAY_OUTBOUND_ALLOWED_NETWORKS if it is meant)",
            address,
        )


class GuardedResolver(AbstractResolver):
    """aiohttp's default resolver, refusing a name if any address it resolves to is forbidden."""

    def __init__(self) -> None:
        self._resolver = DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._resolver.resolve(host, port, family)
        for result in results:
            if outbound.is_forbidden(result["host"]):
                raise ForbiddenAddressError(result["host"])
        return results

    async def close(self) -> None:
        await self._resolver.close()


def guarded_socket(addr_info: AddrInfoType) -> socket.socket:
    """The socket aiohttp would make, refused for a forbidden address (TCPConnector's
    socket_factory)."""
    family, type_, proto, _, address = addr_info
    if outbound.is_forbidden(address[0]):
        raise ForbiddenAddressError(address[0])
    return socket.socket(family=family, type=type_, proto=proto)
