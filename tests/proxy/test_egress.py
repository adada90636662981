"""The upstream client connects only to public addresses (or allow-listed networks), checked at
connection time, and never follows a redirect with the provider's credentials."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import httpx
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from proxy.upstream import UpstreamClient
from tests.fakes.anthropic_upstream import FakeAnthropic
from tests.proxy.conftest import GatewayServer, Governed

BODY = b'{"model": "claude-sonnet-4-6", "max_tokens": 5, "messages": []}'
HEADERS = {"content-type": "application/json", "x-api-key": "upstream-secret-for-tests-0001"}


@pytest.fixture
def no_allow_list(settings: Any) -> None:
    settings.GATEWAY_OUTBOUND_ALLOWED_NETWORKS = []


@pytest.fixture
async def client() -> AsyncIterator[UpstreamClient]:
    upstream = UpstreamClient()
    yield upstream
    await upstream.close()


async def test_a_literal_loopback_address_is_refused(
    no_allow_list: None, client: UpstreamClient, fake_upstream: FakeAnthropic
) -> None:
    with pytest.raises(aiohttp.ClientConnectionError, match="not a public address"):
        await client.post(fake_upstream.base_url + "/v1/messages", headers=HEADERS, body=BODY)

    assert fake_upstream.received == []


async def test_a_name_that_resolves_to_loopback_is_refused(
    no_allow_list: None, client: UpstreamClient, fake_upstream: FakeAnthropic
) -> None:
    url = f"http://localhost:{fake_upstream.port}/v1/messages"

    with pytest.raises(aiohttp.ClientConnectionError, match="not a public address"):
        await client.post(url, headers=HEADERS, body=BODY)

    assert fake_upstream.received == []


@pytest.mark.parametrize("address", ["169.254.169.254", "10.0.0.1", "[fd00::1]"])
async def test_metadata_and_private_addresses_are_refused_before_connecting(
    no_allow_list: None, client: UpstreamClient, address: str
) -> None:
    with pytest.raises(aiohttp.ClientConnectionError, match="not a public address"):
        await client.post(f"http://{address}/v1/messages", headers=HEADERS, body=BODY)


async def test_a_public_name_rebound_to_the_metadata_service_is_refused(
    no_allow_list: None, client: UpstreamClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The name was public when the base URL was saved; now DNS answers the metadata address.
    def rebound(host: str, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
        assert host == "api.provider.example"
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("169.254.169.254", port))]

    monkeypatch.setattr(socket, "getaddrinfo", rebound)

    with pytest.raises(aiohttp.ClientConnectionError, match="not a public address"):
        await client.post("https://api.provider.example/v1/messages", headers=HEADERS, body=BODY)


async def test_allow_listed_networks_are_reached(
    client: UpstreamClient, fake_upstream: FakeAnthropic
) -> None:
    # gatewaysite.settings_test allow-lists 127.0.0.0/8.
    response = await client.post(
        fake_upstream.base_url + "/v1/messages", headers=HEADERS, body=BODY
    )
    await response.read()
    await response.close()

    assert response.status == 200
    assert len(fake_upstream.received) == 1


async def test_an_upstream_redirect_is_not_followed(client: UpstreamClient) -> None:
    seen: list[str] = []

    async def redirect(request: web.Request) -> web.Response:
        seen.append(request.path)
        raise web.HTTPTemporaryRedirect("/collect")

    app = web.Application()
    app.router.add_post("/v1/messages", redirect)
    app.router.add_post("/collect", redirect)
    async with TestServer(app, host="127.0.0.1") as server:
        response = await client.post(
            str(server.make_url("/v1/messages")), headers=HEADERS, body=BODY
        )
        await response.read()
        await response.close()

    assert response.status == 307
    assert seen == ["/v1/messages"]  # the credentials never went to /collect


@pytest.mark.django_db(transaction=True)
def test_the_gateway_answers_502_for_a_provider_on_a_forbidden_address(
    gateway: GatewayServer, governed: Governed, fake_upstream: FakeAnthropic, settings: Any
) -> None:
    # Saved while its network was allow-listed, then the allow-list was emptied: the stored
    # base URL is checked again at connection time.
    settings.GATEWAY_OUTBOUND_ALLOWED_NETWORKS = []

    response = httpx.post(
        gateway.anthropic_url + "/v1/messages",
        json={"model": "claude-sonnet-4-6", "max_tokens": 5, "messages": []},
        headers={"x-api-key": governed.secret},
        timeout=10,
    )

    assert response.status_code == 502
    assert response.json()["error"]["type"] == "api_error"
    assert fake_upstream.received == []
