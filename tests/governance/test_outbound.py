"""The outbound guard on its own: which addresses are forbidden, and how URLs are checked."""

from __future__ import annotations

import socket
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured

from governance import outbound

TOKEN = "T000/B000/s3cr3t-in-the-path"


@pytest.fixture(autouse=True)
def _no_allow_list(settings: Any) -> None:
    settings.GATEWAY_OUTBOUND_ALLOWED_NETWORKS = []


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",  # loopback
        "127.8.9.10",
        "10.0.0.1",  # RFC 1918
        "172.16.5.4",
        "192.168.1.1",
        "100.64.0.1",  # carrier-grade NAT
        "169.254.169.254",  # link-local: the cloud metadata service
        "0.0.0.0",  # noqa: S104 (unspecified; an address checked, never bound)
        "224.0.0.1",  # multicast
        "240.0.0.1",  # reserved
        "255.255.255.255",
        "::1",
        "::",
        "fc00::1",  # unique local
        "fd12:3456::1",
        "fe80::1",  # link-local
        "fe80::1%eth0",
        "ff02::1",
        "::ffff:169.254.169.254",  # IPv4-mapped
        "::ffff:10.0.0.1",
        "64:ff9b::a00:1",  # NAT64 of 10.0.0.1
        "2002:a9fe:a9fe::1",  # 6to4 of 169.254.169.254
        "2001:db8::1",  # documentation
    ],
)
def test_non_public_addresses_are_forbidden(address: str) -> None:
    assert outbound.is_forbidden(address)


@pytest.mark.parametrize(
    "address", ["8.8.8.8", "1.1.1.1", "160.79.104.10", "2606:4700:4700::1111", "64:ff9b::808:808"]
)
def test_public_addresses_are_allowed(address: str) -> None:
    assert not outbound.is_forbidden(address)


def test_allow_listed_networks_are_allowed_and_nothing_around_them(settings: Any) -> None:
    settings.GATEWAY_OUTBOUND_ALLOWED_NETWORKS = ["10.20.0.0/16", "fd00:1::/32"]

    assert not outbound.is_forbidden("10.20.3.4")
    assert not outbound.is_forbidden("fd00:1::5")
    assert outbound.is_forbidden("10.21.0.1")
    assert outbound.is_forbidden("169.254.169.254")


def test_a_malformed_allow_list_is_a_configuration_error(settings: Any) -> None:
    settings.GATEWAY_OUTBOUND_ALLOWED_NETWORKS = ["10.0.0.0/33"]

    with pytest.raises(ImproperlyConfigured, match="GATEWAY_OUTBOUND_ALLOWED_NETWORKS"):
        outbound.is_forbidden("8.8.8.8")


@pytest.mark.parametrize(
    "url",
    [
        f"http://127.0.0.1:8080/{TOKEN}",
        f"http://169.254.169.254/latest/{TOKEN}",
        f"https://10.0.0.1/{TOKEN}",
        f"http://localhost:9000/{TOKEN}",  # a name resolving to loopback
        f"http://2130706433/{TOKEN}",  # 127.0.0.1 spelled as a number
        f"http://[::1]/{TOKEN}",
    ],
)
def test_urls_reaching_inside_are_refused_without_echoing_the_url(url: str) -> None:
    with pytest.raises(outbound.ForbiddenDestination) as refused:
        outbound.check_url(url)

    assert refused.value.code == "forbidden_address"
    assert TOKEN not in str(refused.value)


def test_every_address_a_name_resolves_to_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    def two_answers(host: str, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
        return [
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("8.8.8.8", port)),
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("169.254.169.254", port)),
        ]

    monkeypatch.setattr(socket, "getaddrinfo", two_answers)

    with pytest.raises(outbound.ForbiddenDestination, match=r"169\.254\.169\.254"):
        outbound.check_url("https://mixed.example.com/hook")


def test_a_name_that_does_not_resolve_passes_validation_but_not_sending() -> None:
    outbound.check_url("https://hooks.example.invalid/x")

    with pytest.raises(OSError):
        outbound.checked_addresses("https://hooks.example.invalid/x")


def test_only_http_and_https_urls_are_accepted() -> None:
    with pytest.raises(outbound.ForbiddenDestination) as refused:
        outbound.check_url(f"ftp://files.example.com/{TOKEN}")
    assert refused.value.code == "bad_scheme"
    with pytest.raises(outbound.ForbiddenDestination):
        outbound.check_url("http://bad:port/")
