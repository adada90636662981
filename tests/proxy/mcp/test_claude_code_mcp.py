"""The real Claude Code CLI with the gateway's /mcp added as `claude mcp add` does it: the model
request Claude Code sends (forwarded to the fake upstream) holds only the granted tools.

Runs where the CLI is installed (see tests/proxy/test_claude_code.py); skipped otherwise."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.fakes.anthropic_upstream import FakeAnthropic
from tests.proxy.conftest import GatewayServer, ensure_price_book, route_claude_to
from tests.proxy.mcp.conftest import Team_, World, grant, http_config
from tests.proxy.mcp.servers import RecordingServer
from tests.proxy.test_claude_code import CLAUDE, sealed_env

pytestmark = [
    pytest.mark.skipif(CLAUDE is None, reason="Claude Code CLI not found (see test_claude_code)"),
    pytest.mark.django_db(transaction=True),
]


def claude(home: Path, gateway: GatewayServer, secret: str, *args: str) -> str:
    """Claude Code with a scratch HOME, nothing reachable but 127.0.0.1, no nonessential traffic."""
    assert CLAUDE is not None
    home.mkdir(exist_ok=True)
    env = {
        **sealed_env(home),
        "ANTHROPIC_BASE_URL": gateway.anthropic_url,
        "ANTHROPIC_API_KEY": secret,
    }
    done = subprocess.run(
        [CLAUDE, *args],
        env=env,
        cwd=home,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert done.returncode == 0, (done.stdout, done.stderr)
    return done.stdout


@pytest.fixture
def granted(
    world: World, backend: Team_, devtools: RecordingServer, finance: RecordingServer
) -> World:
    world.add_server(http_config("devtools", devtools))
    world.add_server(http_config("finance", finance))
    world.grant(backend.key_id, grant("devtools", "echo", "add"))
    return world


@pytest.mark.usefixtures("granted")
def test_claude_code_sees_only_the_granted_gateway_tools(
    gateway: GatewayServer, backend: Team_, fake_upstream: FakeAnthropic, tmp_path: Path
) -> None:
    ensure_price_book()  # transactional tests before this one may have emptied it
    route_claude_to(fake_upstream)
    home = tmp_path / "home"
    claude(
        home,
        gateway,
        backend.secret,
        "mcp",
        "add",
        "--transport",
        "http",
        "gateway",
        gateway.base_url + "/mcp",
        "--header",
        f"Authorization: Bearer {backend.secret}",
    )

    claude(home, gateway, backend.secret, "-p", "Use the gateway tools to add 2 and 3.")

    # Claude Code defers MCP tools behind its tool search: their names are listed in the request
    # (the definitions follow once the model searches), so every mention counts.
    forwarded = b"".join(r.body for r in fake_upstream.received if r.path.endswith("/messages"))
    mentioned = set(re.findall(rb"mcp__gateway__[A-Za-z0-9_-]+", forwarded))
    assert mentioned == {b"mcp__gateway__devtools__echo", b"mcp__gateway__devtools__add"}
    assert b"finance" not in forwarded and b"db_drop" not in forwarded
