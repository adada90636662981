"""The Anthropic Messages API (and anything that speaks it, e.g. Foundry's /anthropic)."""

from __future__ import annotations

import orjson

from governance.policy import RouteTarget
from proxy.providers.base import UpstreamCall
from proxy.upstream import UpstreamClient, UpstreamResponse

DEFAULT_BASE_URL = "https://api.anthropic.com"


def body_for_model(call: UpstreamCall, model: str) -> bytes:
    """The client's bytes untouched unless the model must change (override, route, downgrade)."""
    if call.parsed.get("model") == model:
        return call.body
    return orjson.dumps({**call.parsed, "model": model})


class AnthropicProvider:
    def __init__(self, client: UpstreamClient) -> None:
        self._client = client

    async def send(self, *, target: RouteTarget, call: UpstreamCall) -> UpstreamResponse:
        provider = target.provider
        url = (provider.base_url or DEFAULT_BASE_URL).rstrip("/") + call.path
        if call.query:
            url += "?" + call.query
        headers = dict(call.headers)
        headers["accept-encoding"] = "identity"
        credentials = provider.credentials
        if call.subscription_token and provider.kind == "anthropic":
            headers["authorization"] = f"Bearer {call.subscription_token}"
        elif credentials.get("api_key"):
            headers["x-api-key"] = credentials["api_key"]
        elif credentials.get("auth_token"):
            headers["authorization"] = f"Bearer {credentials['auth_token']}"
        headers.setdefault("anthropic-version", "2023-06-01")
        headers["content-type"] = "application/json"
        return await self._client.post(
            url,
            headers=headers,
            body=body_for_model(call, target.upstream_model or call.parsed["model"]),
        )
