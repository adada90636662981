"""The guarded httpx transports (governance/guarded_http.py) on real sockets, against a name
whose DNS answer changes between lookups (DNS rebinding).

Two receivers listen on the same port: 127.0.0.1 (allowed by the test's allow-list) and
127.0.0.3 (loopback, not allowed: it stands for the metadata service or an internal host).
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import httpx2
import pytest

from governance import guarded_http, outbound
from tests.fakes.webhook_receiver import WebhookReceiver

NAME = "rebound.test"
ALLOWED, INSIDE = "127.0.0.1", "127.0.0.3"


@dataclass
class Receivers:
    allowed: WebhookReceiver
    inside: WebhookReceiver
    port: int

    @property
    def url(self) -> str:
        return f"http://{NAME}:{self.port}/hook"


@dataclass
class Rebinding:
    """socket.getaddrinfo for NAME: the scripted answers in turn, then the last one forever."""

    answers: list[str]
    port: int
    lookups: list[str] = field(default_factory=list)

    def __call__(self, host: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else host
        if name != NAME:
            return REAL_GETADDRINFO(host, *args, **kwargs)
        address = self.answers[min(len(self.lookups), len(self.answers) - 1)]
        self.lookups.append(address)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, self.port))]


REAL_GETADDRINFO = socket.getaddrinfo


@pytest.fixture
def receivers(settings: Any) -> Iterator[Receivers]:
    settings.GATEWAY_OUTBOUND_ALLOWED_NETWORKS = [f"{ALLOWED}/32"]
    allowed = WebhookReceiver(ALLOWED).start()
    port = int(allowed.base_url.rsplit(":", 1)[1])
    inside = WebhookReceiver(INSIDE, port).start()
    yield Receivers(allowed, inside, port)
    allowed.stop()
    inside.stop()


def rebind(monkeypatch: pytest.MonkeyPatch, port: int, *answers: str) -> Rebinding:
    rebinding = Rebinding(list(answers), port)
    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    return rebinding


def test_the_sync_transport_connects_to_the_address_it_checked(
    receivers: Receivers, monkeypatch: pytest.MonkeyPatch
) -> None:
    dns = rebind(monkeypatch, receivers.port, ALLOWED, INSIDE)

    with httpx.Client(transport=guarded_http.guarded_transport()) as client:
        response = client.post(receivers.url, content=b"{}")

    assert response.status_code == 200
    assert len(receivers.allowed.requests) == 1 and receivers.inside.requests == []
    assert dns.lookups == [ALLOWED]  # one lookup: the address checked is the address used


def test_a_check_before_the_request_does_not_vouch_for_the_connection(
    receivers: Receivers, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rebinding attack itself: allowed when checked, forbidden when connecting."""
    rebind(monkeypatch, receivers.port, ALLOWED, INSIDE)
    assert outbound.checked_addresses(receivers.url) == [ALLOWED]

    with (
        httpx.Client(transport=guarded_http.guarded_transport()) as client,
        pytest.raises(outbound.ForbiddenDestination, match=INSIDE),
    ):
        client.post(receivers.url, content=b"{}")

    assert receivers.inside.requests == []


async def test_the_async_transport_connects_to_the_address_it_checked(
    receivers: Receivers, monkeypatch: pytest.MonkeyPatch
) -> None:
    dns = rebind(monkeypatch, receivers.port, ALLOWED, INSIDE)

    async with httpx2.AsyncClient(transport=guarded_http.guarded_async_transport()) as client:
        first = await client.post(receivers.url, content=b"{}")
        await client.aclose()
    # A new client, a new connection, a new lookup: now the forbidden answer, refused.
    async with httpx2.AsyncClient(transport=guarded_http.guarded_async_transport()) as client:
        with pytest.raises(outbound.ForbiddenDestination, match=INSIDE):
            await client.post(receivers.url, content=b"{}")

    assert first.status_code == 200
    assert len(receivers.allowed.requests) == 1 and receivers.inside.requests == []
    assert dns.lookups == [ALLOWED, INSIDE]


def test_a_name_that_does_not_resolve_is_a_connect_error() -> None:
    with (
        httpx.Client(transport=guarded_http.guarded_transport()) as client,
        pytest.raises(httpx.ConnectError, match="cannot resolve the host"),
    ):
        client.post("http://no-such-host.invalid/hook", content=b"{}")
