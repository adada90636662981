"""The real Claude Code CLI through the gateway, on the built-in mock provider (opt-in).

Runs only where the CLI is installed: CLAUDE_CODE_BIN names the binary, or `claude` is on PATH
(e.g. `npm install @anthropic-ai/claude-code` and CLAUDE_CODE_BIN=node_modules/.bin/claude).
The test never installs it. Claude Code gets a scratch HOME, no telemetry or nonessential
traffic, and one retry at most (it retries almost every error by itself).
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
import time
import uuid
import zoneinfo
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest

from governance import periods
from governance.models import Deployment, ModelRoute, Organization, Provider, Team
from governance.services import common
from telemetry import ledger
from telemetry.models import UsageRecord
from tests import factories
from tests.proxy.conftest import ACTOR, GatewayServer, ensure_price_book, wait_for


def claude_binary() -> str | None:
    configured = os.environ.get("CLAUDE_CODE_BIN", "")
    if configured:
        return configured if os.access(configured, os.X_OK) else None
    return shutil.which("claude")


CLAUDE = claude_binary()
MOCK_REPLY = "Hello from the gateway's mock provider ("
TIMEZONE = "Europe/Berlin"

pytestmark = [
    pytest.mark.skipif(
        CLAUDE is None,
        reason="Claude Code CLI not found: set CLAUDE_CODE_BIN to its binary or put `claude` "
        "on PATH (npm install @anthropic-ai/claude-code)",
    ),
    pytest.mark.django_db(transaction=True),
]


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str


def run_claude(gateway: GatewayServer, secret: str, home: Path, *args: str) -> Run:
    assert CLAUDE is not None
    home.mkdir(exist_ok=True)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "NO_PROXY": "127.0.0.1,localhost",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_TELEMETRY": "1",
        "CLAUDE_CODE_MAX_RETRIES": "1",
        "ANTHROPIC_BASE_URL": gateway.anthropic_url,
        "ANTHROPIC_API_KEY": secret,
    }
    done = subprocess.run(
        [CLAUDE, "-p", *args],
        env=env,
        cwd=home,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return Run(done.returncode, done.stdout.strip(), done.stderr.strip())


def claude_version() -> str:
    assert CLAUDE is not None
    out = subprocess.run(
        [CLAUDE, "--version"], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    return out.split()[0]  # "2.1.197 (Claude Code)"


@dataclass
class MockGoverned:
    organization: Organization
    team: Team
    secret: str


@pytest.fixture
def mock_governed() -> MockGoverned:
    """As a newcomer sets it up: every Claude model on the built-in mock provider."""
    ensure_price_book()
    org = factories.organization(name="acme", timezone=TIMEZONE)
    team = factories.team(organization=org, name="backend")
    provider = Provider(name="mock", kind=Provider.Kind.MOCK)
    common.save_instance(provider, actor=ACTOR)
    route = ModelRoute(public_name="claude-*")
    common.save_instance(route, actor=ACTOR)
    common.save_instance(Deployment(route=route, provider=provider, upstream_model=""), actor=ACTOR)
    secret = factories.issued_key(team=team, name="vk-backend").secret
    return MockGoverned(org, team, secret)


def test_claude_p_answers_from_the_mock_and_lands_in_the_ledger(
    gateway: GatewayServer, mock_governed: MockGoverned, tmp_path: Path
) -> None:
    run = run_claude(gateway, mock_governed.secret, tmp_path / "home", "say hello")

    assert run.returncode == 0, (run.stdout, run.stderr)
    assert run.stdout.startswith(MOCK_REPLY)
    assert run.stdout.endswith("You said: say hello")
    [row] = [r for r in wait_rows(1) if r.status == 200]
    assert row.provider == "mock" and row.stream
    assert row.served_model == row.requested_model and row.served_model in run.stdout
    assert (row.client_name, row.client_version) == ("claude-cli", claude_version())
    assert str(uuid.UUID(row.session_id)) == row.session_id
    assert row.input_tokens > 0 and row.output_tokens > 0
    assert row.cost_micros > 0
    assert (row.organization_id, row.team_id) == (
        mock_governed.organization.pk,
        mock_governed.team.pk,
    )


def test_json_output_reports_the_usage_and_session_the_ledger_holds(
    gateway: GatewayServer, mock_governed: MockGoverned, tmp_path: Path
) -> None:
    run = run_claude(
        gateway, mock_governed.secret, tmp_path / "home", "--output-format", "json", "say hello"
    )

    assert run.returncode == 0, (run.stdout, run.stderr)
    result = orjson.loads(run.stdout)
    assert result["is_error"] is False
    assert result["result"].startswith(MOCK_REPLY)
    [row] = wait_rows(1)
    assert result["session_id"] == row.session_id
    usage = result["usage"]
    assert (usage["input_tokens"], usage["output_tokens"]) == (
        row.input_tokens,
        row.output_tokens,
    )


def test_exhausted_budget_is_printed_verbatim_after_one_call(
    gateway: GatewayServer, mock_governed: MockGoverned, tmp_path: Path
) -> None:
    issued = factories.issued_key(team=mock_governed.team, name="vk-broke")
    factories.budget(owner=issued.key, amount_micros=10_000)
    now = dt.datetime.now(dt.UTC)
    ledger.write_events(
        [
            {
                "request_id": "gwreq_" + uuid.uuid4().hex,
                "created_at": now,
                "organization_id": mock_governed.organization.pk,
                "team_id": mock_governed.team.pk,
                "key_id": issued.key.pk,
                "routed_model": "claude-sonnet-4-6",
                "status": 200,
                "cost_micros": 12_345,
            }
        ]
    )

    run = run_claude(gateway, issued.secret, tmp_path / "home", "say hello")

    end = periods.window("month", TIMEZONE, now).end
    assert end is not None
    resets = end.astimezone(zoneinfo.ZoneInfo(TIMEZONE))
    assert run.returncode != 0
    assert run.stdout == (
        'API Error: 402 Budget exhausted: key "vk-broke" monthly budget of $0.01 has $0.012345 '
        f"spent. It resets on {resets:%Y-%m-%d %H:%M} {TIMEZONE}."
    )
    wait_rows(2)
    time.sleep(0.5)  # a retry would have been logged by now
    refused = UsageRecord.objects.filter(key_id=issued.key.pk, status=402)
    assert refused.count() == 1
    assert refused.get().client_name == "claude-cli"


def wait_rows(count: int) -> list[UsageRecord]:
    wait_for(lambda: UsageRecord.objects.count() >= count, timeout=10)
    return list(UsageRecord.objects.order_by("id"))
