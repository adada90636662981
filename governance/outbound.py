"""Which addresses the gateway may send to on an admin's say-so: provider base URLs and alert
webhooks.

Whoever can edit a provider or an alert channel chooses where the gateway connects, with the
provider's credentials attached. Without a guard that reaches the gateway's own network:
loopback services, private ranges, and the cloud metadata service on 169.254.169.254, which
hands out the machine's cloud credentials. So every address a URL's host is, or resolves to,
must be public unicast, unless its network is listed in GATEWAY_OUTBOUND_ALLOWED_NETWORKS
(comma-separated CIDRs, e.g. a self-hosted model server on 10.20.0.0/16).

A name is checked again each time it is resolved for a connection (proxy/egress.py, governance
/guarded_http.py), on the addresses the connection then uses: a DNS answer can change after
the URL was validated.

Pure (no ORM), so the proxy can use it. Errors never quote the URL: a webhook URL's path and
query are its secret, and a base URL may carry credentials too.
"""

from __future__ import annotations

import ipaddress
import socket
from functools import lru_cache
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured, ValidationError

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# NAT64's well-known prefix: DNS64 on an IPv6-only network maps every IPv4 host into it.
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
SCHEMES = ("http", "https")


class ForbiddenDestination(ValidationError):
    """A URL that is not http(s), or whose host is or resolves to a non-public address."""


def allowed_networks() -> tuple[Network, ...]:
    return _parse_networks(tuple(settings.GATEWAY_OUTBOUND_ALLOWED_NETWORKS))


@lru_cache(maxsize=8)
def _parse_networks(values: tuple[str, ...]) -> tuple[Network, ...]:
    try:
        return tuple(ipaddress.ip_network(v.strip(), strict=False) for v in values if v.strip())
    except ValueError as exc:
        raise ImproperlyConfigured(f"GATEWAY_OUTBOUND_ALLOWED_NETWORKS: {exc}") from exc


def is_forbidden(ip: str | Address) -> bool:
    """Whether the gateway must not connect to `ip`: anything but public unicast (loopback,
    RFC 1918, fc00::/7, 100.64.0.0/10, link-local, unspecified, multicast, reserved, ...),
    unless it is in an allow-listed network."""
    address = ipaddress.ip_address(ip.split("%", 1)[0]) if isinstance(ip, str) else ip
    judged = _where_it_goes(address)
    networks = allowed_networks()
    if any(candidate in network for candidate in (address, *judged) for network in networks):
        return False
    return any(map(_non_public, judged))


def _where_it_goes(address: Address) -> list[Address]:
    """The addresses that decide: an IPv6 address that carries an IPv4 one (mapped, NAT64,
    6to4) reaches that IPv4 host, so `::ffff:169.254.169.254` counts as the metadata service."""
    if isinstance(address, ipaddress.IPv4Address):
        return [address]
    if address.ipv4_mapped is not None:
        return [address.ipv4_mapped]
    if address in _NAT64:
        return [ipaddress.IPv4Address(int(address) & 0xFFFF_FFFF)]
    if address.sixtofour is not None:
        return [address, address.sixtofour]
    return [address]


def _non_public(address: Address) -> bool:
    # is_global alone misses multicast, and per Python version some reserved ranges.
    site_local = isinstance(address, ipaddress.IPv6Address) and address.is_site_local
    return not address.is_global or address.is_multicast or address.is_reserved or site_local


def check_url(url: str) -> None:
    """Validate a URL an admin or a config file sets: http(s), and its host is or resolves to
    allowed addresses only. A name that does not resolve here passes: nothing can be reached
    through it now, and every connection checks the addresses again."""
    host, port = _host_and_port(url)
    try:
        addresses = resolve(host, port)
    except OSError:
        return
    refuse_forbidden(addresses)


def check_field(url: str, field: str) -> None:
    """check_url for a model's clean(), the error on `field`. A malformed URL is left to the
    field's own validator, so the form does not show two errors for one mistake."""
    try:
        check_url(url)
    except ForbiddenDestination as exc:
        if exc.code != "bad_url":
            raise ValidationError({field: exc.messages}) from None


def checked_addresses(url: str) -> list[str]:
    """The addresses to connect to for `url`, right before sending. Raises
    ForbiddenDestination for a forbidden one and OSError when the host does not resolve."""
    host, port = _host_and_port(url)
    addresses = resolve(host, port)
    refuse_forbidden(addresses)
    return addresses


def resolve(host: str, port: int) -> list[str]:
    """Every address `host` resolves to (a literal address resolves to itself)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except UnicodeError as exc:  # an IDNA name that cannot be encoded resolves to nothing
        raise OSError(f"cannot resolve {host!r}") from exc
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def _host_and_port(url: str) -> tuple[str, int]:
    # Two codes: a form's URL field already reports a malformed URL, but not a scheme that
    # URLField accepts (ftp) and the gateway cannot send to.
    bad = ForbiddenDestination("enter a valid http(s) URL", code="bad_url")
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError:  # a malformed port or IPv6 literal
        raise bad from None
    if parts.scheme not in SCHEMES:
        raise ForbiddenDestination("enter an http(s) URL", code="bad_scheme")
    if not host:
        raise bad
    return host, port or (443 if parts.scheme == "https" else 80)


def refuse_forbidden(addresses: list[str]) -> None:
    """Raise ForbiddenDestination, naming the address, for the first forbidden one."""
    for address in addresses:
        if is_forbidden(address):
            raise ForbiddenDestination(
                f"{address.split('%', 1)[0]} is a loopback, private, link-local or otherwise "
                "non-public address; to allow it, list its network in "
                "GATEWAY_OUTBOUND_ALLOWED_NETWORKS",
                code="forbidden_address",
            )
