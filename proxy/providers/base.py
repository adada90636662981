from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from governance.policy import RouteTarget
from proxy.upstream import UpstreamResponse

# Request headers never forwarded: the client's credentials, hop-by-hop and framing headers,
# and encodings (the gateway asks for identity so it can read usage).
DROPPED_REQUEST_HEADERS = frozenset(
    {
        "x-api-key",
        "authorization",
        "host",
        "content-length",
        "connection",
        "keep-alive",
        "transfer-encoding",
        "te",
        "upgrade",
        "proxy-authorization",
        "accept-encoding",
        "cookie",
        "expect",
        # What a load balancer or the client says about the client's address and scheme is
        # nobody's business upstream (and would leak internal addresses).
        "forwarded",
        "x-forwarded-for",
        "x-forwarded-host",
        "x-forwarded-proto",
        "x-forwarded-port",
        "x-forwarded-prefix",
        "x-real-ip",
        "via",
        # The virtual key of a Claude-subscription request (proxy/subscription.py).
        "x-gateway-key",
    }
)
DROPPED_REQUEST_PREFIXES = ("x-forwarded-",)


@dataclass(slots=True)  # not frozen: made per request, and frozen costs 3x to build
class UpstreamCall:
    path: str  # "/v1/messages" or "/v1/messages/count_tokens"
    query: str  # forwarded as sent, e.g. "beta=true"
    body: bytes
    parsed: dict[str, Any]
    headers: dict[str, str]  # already stripped of DROPPED_REQUEST_HEADERS
    stream: bool
    # A Claude subscription's OAuth token, sent to Anthropic instead of the provider's key
    # (proxy/subscription.py); never to any other provider.
    subscription_token: str = field(default="", repr=False)


class UnsupportedProvider(Exception):
    pass


class Provider(Protocol):
    async def send(self, *, target: RouteTarget, call: UpstreamCall) -> UpstreamResponse: ...
