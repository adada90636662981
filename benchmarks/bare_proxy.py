"""The floor: a bare ASGI pass-through proxy with no governance at all, for comparison.

Same server (uvicorn, one worker, same options) and same upstream client (one aiohttp session
with pooled keep-alive connections) as the gateway, but nothing else: no key lookup, no
admission, no metering, no ledger. The gap between this and the gateway is what governance
costs; the gap between this and calling the upstream directly is what any Python proxy on this
stack costs on this machine at this moment (it also normalises for how busy the machine was).

Served by benchmarks/run.py as `uvicorn bare_proxy:app --app-dir benchmarks` with
BENCH_UPSTREAM=http://127.0.0.1:PORT in the environment.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import aiohttp

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
FORWARDED = ("content-type", "anthropic-version", "anthropic-beta")

_session: aiohttp.ClientSession | None = None


def _upstream() -> aiohttp.ClientSession:
    global _session  # noqa: PLW0603 (one session per worker, opened on first use)
    if _session is None:
        _session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=512), skip_auto_headers=("User-Agent",)
        )
    return _session


async def _read_body(receive: Receive) -> bytes:
    parts = []
    while True:
        message = await receive()
        parts.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(parts)


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            if _session is not None:
                await _session.close()
            await send({"type": "lifespan.shutdown.complete"})
            return


async def app(scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    body = await _read_body(receive)
    headers = {
        name.decode(): value.decode()
        for name, value in scope["headers"]
        if name.decode().lower() in FORWARDED
    }
    headers["x-api-key"] = "bench-upstream-key-not-secret"
    url = os.environ["BENCH_UPSTREAM"] + scope["path"].removeprefix("/anthropic")
    async with _upstream().post(url, data=body, headers=headers) as response:
        content_type = response.headers.get("content-type", "application/json").encode()
        if content_type.startswith(b"text/event-stream"):
            await send(
                {
                    "type": "http.response.start",
                    "status": response.status,
                    "headers": [(b"content-type", content_type)],
                }
            )
            async for chunk in response.content.iter_any():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
            return
        data = await response.read()
        await send(
            {
                "type": "http.response.start",
                "status": response.status,
                "headers": [
                    (b"content-type", content_type),
                    (b"content-length", str(len(data)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": data})
