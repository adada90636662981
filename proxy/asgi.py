"""Minimal ASGI request/response plumbing for the proxy routes (no Django request cycle)."""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

import orjson

from proxy.errors import GatewayError

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


@dataclass(slots=True)
class Incoming:
    method: str
    path: str
    query: str
    headers: dict[str, str]  # lower-case names; repeated headers joined with ","
    client_address: str
    body: bytes = b""
    request_id: str = ""  # made on arrival; every answer and the ledger row carry it


# Header names as str, by their bytes: a client sends the same dozen names on every request.
# Bounded: names are the client's to choose.
_header_names: dict[bytes, str] = {}
MAX_REMEMBERED_HEADER_NAMES = 1024


def _header_name(raw: bytes) -> str:
    name = _header_names.get(raw)
    if name is None:
        name = raw.decode("latin-1").lower()
        if len(_header_names) < MAX_REMEMBERED_HEADER_NAMES:
            _header_names[raw] = name
    return name


def incoming(scope: Scope, trusted_proxies: TrustedProxies | None = None) -> Incoming:
    headers: dict[str, str] = {}
    names = _header_names
    for raw_name, raw_value in scope["headers"]:
        name = names.get(raw_name) or _header_name(raw_name)
        value = raw_value.decode("latin-1")
        # Repeated anthropic-beta lines (and any other repeat) are joined, as HTTP allows.
        headers[name] = f"{headers[name]},{value}" if name in headers else value
    client = scope.get("client")
    peer = client[0] if client else ""
    return Incoming(
        method=scope["method"],
        path=scope["path"],
        query=scope.get("query_string", b"").decode("latin-1"),
        headers=headers,
        client_address=(
            trusted_proxies.client_address(peer, headers.get("x-forwarded-for", ""))
            if trusted_proxies is not None
            else peer
        ),
    )


class TrustedProxies:
    """Load balancers whose X-Forwarded-For is believed (GATEWAY_TRUSTED_PROXIES).

    The client is the right-most address that is not a trusted proxy: every hop appends the
    address it received the request from, so only the part written by trusted hops is true.
    With no trusted proxies the peer address is the client, whatever the headers say.
    """

    def __init__(self, networks: str | list[str]) -> None:
        items = networks.split(",") if isinstance(networks, str) else networks
        self._networks = tuple(
            ipaddress.ip_network(item.strip(), strict=False) for item in items if item.strip()
        )

    def trusts(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self._networks)

    def client_address(self, peer: str, forwarded_for: str) -> str:
        if not self._networks or not forwarded_for or not self.trusts(peer):
            return peer
        client = peer
        for hop in reversed(forwarded_for.split(",")):
            client = hop.strip()
            if not self.trusts(client):
                break
        return client


class InflightBytes:
    """Bytes of request bodies a worker holds at once (GATEWAY_MAX_INFLIGHT_BODY_BYTES): a
    burst of large bodies is refused with 503 instead of exhausting the worker's memory."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def take(self, amount: int) -> None:
        if self.used + amount > self.limit:
            raise GatewayError(
                503,
                "overloaded_error",
                "The gateway is receiving too many large requests at once; retry shortly.",
                headers=[(b"retry-after", b"1")],
            )
        self.used += amount

    def give_back(self, amount: int) -> None:
        self.used = max(0, self.used - amount)


async def read_body(
    receive: Receive, request: Incoming, limit: int, inflight: InflightBytes
) -> tuple[bytes, int]:
    """The whole body, and how many bytes were taken from `inflight` (give them back when the
    request is done, also when this raises: see the taken count on the exception)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise GatewayError(413, "request_too_large", f"Request body exceeds {limit} bytes.")
    taken = int(declared) if declared.isdigit() else 0
    inflight.take(taken)
    parts: list[bytes] = []
    size = 0
    try:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientGone
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise GatewayError(413, "request_too_large", f"Request body exceeds {limit} bytes.")
            if size > taken:  # chunked or longer than declared: take as it arrives
                inflight.take(size - taken)
                taken = size
            parts.append(chunk)
            if not message.get("more_body", False):
                return (parts[0] if len(parts) == 1 else b"".join(parts)), taken
    except BaseException:
        inflight.give_back(taken)
        raise


class ClientGone(Exception):
    """The client disconnected before its request was read."""


async def send_bytes(
    send: Send,
    status: int,
    body: bytes,
    *,
    content_type: bytes = b"application/json",
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type),
                (b"content-length", str(len(body)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def send_json(
    send: Send, status: int, payload: Any, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    await send_bytes(send, status, orjson.dumps(payload), headers=headers)
