"""The MCP gateway end to end: the real gateway (uvicorn in a thread), real MCP servers built
with the `mcp` SDK on 127.0.0.1 or launched over stdio, and the SDK as the client.

The servers and grants a key sees come from a `World` the tests edit: its catalog stands in
for the control plane's snapshot (`Snapshots.mcp_catalog`) and its grants are laid over the
key policies the database yields, so a test changes them like an admin would and bumps the
policy version for the gateway to notice.
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx2
import pytest
from asgiref.sync import sync_to_async
from django.db import connection
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from governance import policy, snapshots
from governance.models import Organization, Team
from governance.policy import KeyPolicy, McpCatalog, McpServerConfig, ToolGrantRule
from governance.services import keys
from proxy.snapshots import Snapshots
from tests import factories
from tests.proxy.conftest import ACTOR, GatewayServer
from tests.proxy.mcp.servers import RecordingServer, devtools_server, finance_server

STDIO_SERVER = Path(__file__).with_name("stdio_server.py")
T = TypeVar("T")


async def in_db(function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """`function` (database work) from an async test, off the event loop, its connection
    closed afterwards: a connection left open in a worker thread keeps PostgreSQL from
    dropping the test database at the end."""

    def run() -> T:
        try:
            return function(*args, **kwargs)
        finally:
            connection.close()

    return await sync_to_async(run, thread_sensitive=False)()


@dataclass
class World:
    servers: dict[str, McpServerConfig] = field(default_factory=dict)
    grants: dict[int, tuple[ToolGrantRule, ...]] = field(default_factory=dict)
    code_mode: dict[int, str] = field(default_factory=dict)

    def add_server(self, config: McpServerConfig) -> None:
        self.servers[config.name] = config
        policy.invalidate_all()

    def grant(self, key_id: int, *rules: ToolGrantRule) -> None:
        self.grants[key_id] = rules
        policy.invalidate_all()


@dataclass
class Team_:
    organization: Organization
    team: Team
    key_id: int
    secret: str


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> World:
    world = World()
    build_key_policy = snapshots.build_key_policy

    def with_grants(lookup_hash: str) -> KeyPolicy | None:
        found = build_key_policy(lookup_hash)
        if found is None:
            return None
        return dataclasses.replace(
            found,
            tool_grants=world.grants.get(found.key_id, ()),
            mcp_code_mode=world.code_mode.get(found.key_id, "inherit"),
        )

    async def catalog(self: Snapshots) -> McpCatalog:
        return McpCatalog(servers=dict(world.servers))

    monkeypatch.setattr(snapshots, "build_key_policy", with_grants)
    monkeypatch.setattr(Snapshots, "mcp_catalog", catalog)
    return world


@pytest.fixture
def backend() -> Team_:
    org = factories.organization(name="acme")
    team = factories.team(organization=org, name="backend")
    issued = keys.create_key(actor=ACTOR, organization=org, team=team, name="vk-backend")
    return Team_(org, team, issued.key.pk, issued.secret)


@pytest.fixture
def devtools() -> Iterator[RecordingServer]:
    server = devtools_server().start()
    yield server
    server.stop()


@pytest.fixture
def finance() -> Iterator[RecordingServer]:
    server = finance_server().start()
    yield server
    server.stop()


def http_config(name: str, server: RecordingServer, **fields: Any) -> McpServerConfig:
    return McpServerConfig(name=name, transport="http", url=server.url, **fields)


def stdio_config(name: str, **fields: Any) -> McpServerConfig:
    return McpServerConfig(
        name=name, transport="stdio", command=(sys.executable, str(STDIO_SERVER)), **fields
    )


def grant(server: str, *allowed: str, denied: tuple[str, ...] = ()) -> ToolGrantRule:
    return ToolGrantRule(
        level="team", owner_name="backend", server=server, allowed=allowed, denied=denied
    )


@contextlib.asynccontextmanager
async def connect(
    gateway: GatewayServer, secret: str, *, mode: str = "legacy", **options: Any
) -> AsyncIterator[Client]:
    """The SDK's client on the gateway's /mcp, as `claude mcp add --header` would send it."""
    headers = {"Authorization": f"Bearer {secret}"}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30.0, read=60.0)) as http,
        Client(
            streamable_http_client(gateway.base_url + "/mcp", http_client=http),
            mode=mode,
            cache=None,
            **options,
        ) as client,
    ):
        yield client


async def tool_names(client: Client) -> list[str]:
    names: list[str] = []
    cursor: str | None = None
    for _ in range(50):
        page = await client.list_tools(cursor=cursor)
        names.extend(tool.name for tool in page.tools)
        cursor = page.next_cursor
        if not cursor:
            return names
    raise AssertionError("tools/list did not end")
