"""The real Claude Code CLI through the gateway: on the built-in mock provider, and on an
OpenAI-compatible model (the project's fake OpenAI server) through the translation.

Runs where the CLI is installed: CLAUDE_CODE_BIN names the binary, else the pinned one
`scripts/install-claude-code` puts in .tools/claude-code (CI runs it), else `claude` on PATH.
The tests never install it. Claude Code gets a scratch HOME, no telemetry, error reporting,
auto-update or other nonessential traffic, a proxy that refuses anything not bound for
127.0.0.1, and one retry at most (it retries almost every error by itself).
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
import time
import uuid
import zoneinfo
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest

from governance import periods
from governance.models import Deployment, ModelRoute, Organization, Provider, Team
from governance.services import common, prices, providers
from telemetry import ledger
from telemetry.models import UsageRecord
from tests import factories
from tests.fakes.openai_upstream import FakeOpenAI, Reply
from tests.proxy.conftest import ACTOR, GatewayServer, ensure_price_book, free_port, wait_for

PINNED = Path(__file__).resolve().parents[2] / ".tools/claude-code/node_modules/.bin/claude"


def claude_binary() -> str | None:
    configured = os.environ.get("CLAUDE_CODE_BIN", "")
    if configured:
        return configured if os.access(configured, os.X_OK) else None
    if os.access(PINNED, os.X_OK):
        return str(PINNED)
    return shutil.which("claude")


CLAUDE = claude_binary()
MOCK_REPLY = "Hello from the gateway's mock provider ("
TIMEZONE = "Europe/Berlin"

pytestmark = [
    pytest.mark.skipif(
        CLAUDE is None,
        reason="Claude Code CLI not found: run scripts/install-claude-code (needs npm), or set "
        "CLAUDE_CODE_BIN to a binary, or put `claude` on PATH",
    ),
    pytest.mark.django_db(transaction=True),
]


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str


def sealed_env(home: Path) -> dict[str, str]:
    """Claude Code's environment in tests: a scratch HOME, no nonessential traffic, and nothing
    reachable but 127.0.0.1 (a proxy on a port nobody listens on catches any other host)."""
    refused = f"http://127.0.0.1:{free_port()}"
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "HTTP_PROXY": refused,
        "HTTPS_PROXY": refused,
        "NO_PROXY": "127.0.0.1,localhost",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_TELEMETRY": "1",
        "DISABLE_ERROR_REPORTING": "1",
        "DISABLE_AUTOUPDATER": "1",
        "CLAUDE_CODE_MAX_RETRIES": "1",
    }


def run_claude(
    gateway: GatewayServer, secret: str, home: Path, *args: str, cwd: Path | None = None
) -> Run:
    assert CLAUDE is not None
    home.mkdir(exist_ok=True)
    env = {
        **sealed_env(home),
        "ANTHROPIC_BASE_URL": gateway.anthropic_url,
        "ANTHROPIC_API_KEY": secret,
    }
    done = subprocess.run(
        [CLAUDE, "-p", *args],
        env=env,
        cwd=cwd or home,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return Run(done.returncode, done.stdout.strip(), done.stderr.strip())


def claude_version() -> str:
    assert CLAUDE is not None
    out = subprocess.run(
        [CLAUDE, "--version"], capture_output=True, text=True, timeout=30, check=True
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


# --- an OpenAI-compatible model behind the gateway ----------------------------------------

OPENAI_MODEL = "llama-3.3-70b-versatile"
# Groq's list prices for the model, per million tokens; cache reads at half the input price.
OPENAI_MODEL_PRICE = {
    "model": OPENAI_MODEL,
    "input": "0.59",
    "output": "0.79",
    "cache_write_5m": "0.59",
    "cache_write_1h": "0.59",
    "cache_read": "0.295",
}
OUTPUT_CAP = 8192  # Groq refuses Claude Code's max_tokens of 32000


@dataclass
class OpenAIGoverned:
    organization: Organization
    team: Team
    secret: str
    fake: FakeOpenAI


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAI]:
    server = FakeOpenAI(max_tokens_limit=OUTPUT_CAP).start()
    yield server
    server.stop()


@pytest.fixture
def openai_governed(fake_openai: FakeOpenAI) -> OpenAIGoverned:
    """Every Claude model Claude Code asks for served by an OpenAI-compatible model (Groq
    here), priced at that model's own price."""
    ensure_price_book()
    prices.load_price_document(document={"prices": [OPENAI_MODEL_PRICE]}, actor=ACTOR)
    org = factories.organization(name="acme", timezone=TIMEZONE)
    team = factories.team(organization=org, name="backend")
    provider = Provider(
        name="groq",
        kind=Provider.Kind.OPENAI_COMPATIBLE,
        base_url=fake_openai.base_url,
        settings={"max_output_tokens": OUTPUT_CAP},
    )
    assert fake_openai.api_key is not None
    providers.save_provider(
        actor=ACTOR, provider=provider, updates={"api_key": fake_openai.api_key}
    )
    route = ModelRoute(public_name="claude-*")
    common.save_instance(route, actor=ACTOR)
    deployment = Deployment(route=route, provider=provider, upstream_model=OPENAI_MODEL)
    common.save_instance(deployment, actor=ACTOR)
    secret = factories.issued_key(team=team, name="vk-backend").secret
    return OpenAIGoverned(org, team, secret, fake_openai)


def test_claude_p_completes_on_an_openai_compatible_model_priced_by_it(
    gateway: GatewayServer, openai_governed: OpenAIGoverned, tmp_path: Path
) -> None:
    fake = openai_governed.fake
    # The script's echo, with usage a real server would report: 12,000 prompt tokens of which
    # 10,000 came from its cache.
    fake.queue(Reply(prompt_tokens=12_000, cached_tokens=10_000, completion_tokens=40))

    run = run_claude(
        gateway,
        openai_governed.secret,
        tmp_path / "home",
        "--output-format",
        "json",
        "say hello through the gateway",
    )

    assert run.returncode == 0, (run.stdout, run.stderr)
    result = orjson.loads(run.stdout)
    assert result["is_error"] is False
    assert result["result"] == (
        f"Hello from the fake OpenAI upstream ({OPENAI_MODEL}). "
        "You said: say hello through the gateway"
    )
    [sent] = fake.chat_requests
    assert sent["model"] == OPENAI_MODEL and sent["max_tokens"] == OUTPUT_CAP
    [row] = wait_rows(1)
    assert (row.status, row.route, row.provider) == (200, "anthropic.messages", "groq")
    assert row.requested_model.startswith("claude-") and row.served_model == OPENAI_MODEL
    assert row.stream and result["session_id"] == row.session_id
    # Anthropic counts input without the cached part; OpenAI's prompt_tokens include it.
    assert (row.input_tokens, row.cache_read_tokens, row.output_tokens) == (2_000, 10_000, 40)
    assert (row.cache_write_5m_tokens, row.cache_write_1h_tokens) == (0, 0)
    usage = result["usage"]
    assert (
        usage["input_tokens"],
        usage["cache_read_input_tokens"],
        usage["output_tokens"],
    ) == (2_000, 10_000, 40)
    # At the model's own price: 2,000 x $0.59 + 10,000 x $0.295 + 40 x $0.79 per million
    # = $0.0041616, rounded to the micro-dollar.
    assert (row.cost_micros, row.cost_estimated) == (4_162, False)
    assert (row.organization_id, row.team_id) == (
        openai_governed.organization.pk,
        openai_governed.team.pk,
    )


def test_a_tool_call_of_the_openai_model_runs_in_claude_code_and_its_result_returns(
    gateway: GatewayServer, openai_governed: OpenAIGoverned, tmp_path: Path
) -> None:
    fake = openai_governed.fake
    work = tmp_path / "work"
    work.mkdir()
    note = work / "note.txt"
    secret_word = "gateway-" + uuid.uuid4().hex[:12]
    note.write_text(f"The word is {secret_word}.\n")
    fake.queue(
        Reply(prompt_tokens=9_000, completion_tokens=25),  # the script's tool call
        Reply(prompt_tokens=9_500, completion_tokens=30),  # the script's answer to the result
    )
    ask = f'Please call tool Read with {{"file_path": "{note}"}}'

    run = run_claude(
        gateway,
        openai_governed.secret,
        tmp_path / "home",
        "--output-format",
        "json",
        "--tools=Read",  # the one tool offered to the model
        "--allowedTools=Read",  # and allowed without asking
        ask,
        cwd=work,
    )

    assert run.returncode == 0, (run.stdout, run.stderr)
    result = orjson.loads(run.stdout)
    assert result["is_error"] is False and result["num_turns"] == 2
    assert result["result"].startswith("The tool returned: ")
    assert secret_word in result["result"]  # only reading the file could have told it
    first, second = fake.chat_requests
    # Besides Read, Claude Code sends a deferred "never call this" placeholder, which the
    # translation keeps as it keeps every deferred tool.
    offered = {t["function"]["name"] for t in first["tools"]}
    assert offered - {"DeferredToolPlaceholder"} == {"Read"}
    [call_id] = [c["id"] for m in second["messages"] for c in m.get("tool_calls") or []]
    [tool_message] = [m for m in second["messages"] if m["role"] == "tool"]
    assert tool_message["tool_call_id"] == call_id
    assert secret_word in str(tool_message["content"])
    rows = wait_rows(2)
    assert [(r.status, r.route, r.provider, r.served_model) for r in rows] == [
        (200, "anthropic.messages", "groq", OPENAI_MODEL)
    ] * 2
    assert rows[0].session_id == rows[1].session_id == result["session_id"]
    assert [(r.input_tokens, r.output_tokens) for r in rows] == [(9_000, 25), (9_500, 30)]
    # 9,000 x $0.59 + 25 x $0.79 and 9,500 x $0.59 + 30 x $0.79 per million.
    assert [r.cost_micros for r in rows] == [5_330, 5_629]
