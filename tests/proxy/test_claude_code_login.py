"""The real Claude Code CLI signs in through the gateway (/login, "Cloud gateway") and then runs
`claude -p` with the minted session, everything on 127.0.0.1.

Opt-in where the CLI is installed (as tests/proxy/test_claude_code.py). Headless: `claude auth
login --gateway-json` is the CLI's own way for a program to show its gateway sign-in to a
person: it writes each question as a JSON line (`url_input`, then `polling` with the user code
and the verification link) and reads the answers on stdin; the test answers and drives the
verification page itself, as the developer's browser would. The gateway URL comes from the
managed-settings keys forceLoginMethod / forceLoginGatewayUrl, which Claude Code also honours
from the user's own settings on a machine without managed settings (the scratch HOME's).
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import pytest

from governance.models import Deployment, ModelRoute, Provider, SignInSession, TeamSignIn
from governance.services import common
from telemetry.models import UsageRecord
from tests import factories
from tests.fakes.oidc_provider import FakeOIDCProvider
from tests.proxy.conftest import ACTOR, GatewayServer, ensure_price_book, wait_for
from tests.proxy.test_claude_code import CLAUDE, MOCK_REPLY, sealed_env
from tests.signin_support import sign_in_through_browser, signin_base, team_with_group
from tests.signin_support import turn_signin_on as configure_signin

pytestmark = [
    pytest.mark.skipif(CLAUDE is None, reason="Claude Code CLI not found (see test_claude_code)"),
    pytest.mark.django_db(transaction=True),
]
LOGIN_SECONDS = 90
MANAGED_MODEL = "claude-haiku-4-5"


@pytest.fixture
def idp() -> Iterator[FakeOIDCProvider]:
    with FakeOIDCProvider() as provider:
        yield provider


MACHINE_MANAGED_SETTINGS = Path("/etc/claude-code/managed-settings.json")


@dataclass
class Machine:
    """A developer's machine: a scratch HOME whose settings name the gateway."""

    home: Path
    env: dict[str, str] = field(default_factory=dict)


@pytest.fixture
def machine(tmp_path: Path, gateway: GatewayServer) -> Machine:
    """The managed-settings keys in the scratch HOME's user settings: Claude Code honours
    them there when the machine itself has no managed settings (its schema says so), which
    keeps the test from writing to /etc."""
    if MACHINE_MANAGED_SETTINGS.exists():
        pytest.skip(f"{MACHINE_MANAGED_SETTINGS} exists: its settings win over the test's")
    home = tmp_path / "home"
    (home / ".claude").mkdir(parents=True)
    (home / ".claude" / "settings.json").write_text(
        json.dumps(
            {
                "forceLoginMethod": "gateway",
                "forceLoginGatewayUrl": signin_base(gateway.base_url),
            }
        )
    )
    env = sealed_env(home)
    return Machine(home, env)


@pytest.fixture
def governed(settings: Any, idp: FakeOIDCProvider, gateway: GatewayServer) -> None:
    """acme/backend on the built-in mock provider; Alice in its IdP group."""
    configure_signin(settings, idp, gateway_url=gateway.base_url)
    ensure_price_book()
    org = factories.organization(name="acme")
    backend = team_with_group(organization=org, name="backend", group="eng-backend")
    # What the CLI applies from the gateway: the model of its `claude -p` runs.
    common.save_instance(
        TeamSignIn(team=backend.team, managed_settings={"model": MANAGED_MODEL}), actor=ACTOR
    )
    provider = Provider(name="mock", kind=Provider.Kind.MOCK)
    common.save_instance(provider, actor=ACTOR)
    route = ModelRoute(public_name="claude-*")
    common.save_instance(route, actor=ACTOR)
    common.save_instance(Deployment(route=route, provider=provider, upstream_model=""), actor=ACTOR)
    idp.add_user("u-alice", email="alice@acme.dev", groups=["eng-backend"])
    idp.sign_in_as("u-alice")


# The CLI's questions (the screens /login would show), each answered by echoing its state and
# what it showed: the gateway URL, the trust prompt (for http on loopback there is no
# certificate to pin: it shows "http-loopback"), the account confirmation.
QUESTIONS = ("url_input", "trust_prompt", "confirm_account")


class SignInDialog:
    """The CLI's JSON lines, read off its stdout by a thread; every question is answered yes.
    Waits are bounded by a deadline and notice a CLI that exited."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None and process.stdin is not None
        self.process = process
        self.lines: list[dict[str, Any]] = []
        self.raw: list[str] = []
        self._answered = 0
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._read, args=(process.stdout,), daemon=True)
        self._thread.start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            with self._lock:
                self.raw.append(line)
                with contextlib.suppress(ValueError):  # a line that is not JSON is kept raw
                    self.lines.append(json.loads(line))

    def _answer_questions(self) -> None:
        with self._lock:
            pending = self.lines[self._answered :]
            self._answered = len(self.lines)
        for line in pending:
            if line.get("state") in QUESTIONS:
                answer = {"state": line["state"], "shown": line.get("shown"), "accept": True}
                assert self.process.stdin is not None
                self.process.stdin.write(json.dumps(answer) + "\n")
                self.process.stdin.flush()

    def wait_for(self, state: str, deadline: float) -> dict[str, Any]:
        while time.monotonic() < deadline:
            self._answer_questions()
            with self._lock:
                found = [line for line in self.lines if line.get("state") == state]
                failed = [line for line in self.lines if line.get("state") == "error"]
            if found:
                return found[-1]
            if failed:
                raise AssertionError(f"the CLI's sign-in failed: {failed[-1]}")
            if self.process.poll() is not None and not self._thread.is_alive():
                stderr = self.process.stderr.read() if self.process.stderr else ""
                raise AssertionError(f"the CLI exited before {state!r}: {self.raw} {stderr}")
            time.sleep(0.05)
        raise AssertionError(f"no {state!r} from the CLI; it wrote {self.raw}")


def login(machine: Machine) -> tuple[int, list[dict[str, Any]], str]:
    assert CLAUDE is not None
    process = subprocess.Popen(
        [CLAUDE, "auth", "login", "--gateway-json"],
        env=machine.env,
        cwd=machine.home,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + LOGIN_SECONDS
    try:
        dialog = SignInDialog(process)
        polling = dialog.wait_for("polling", deadline)
        sign_in_through_browser(polling["browserUrl"])  # the developer's browser
        dialog.wait_for("done", deadline)
        assert process.stdin is not None
        process.stdin.close()
        returncode = process.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
    stderr = process.stderr.read() if process.stderr is not None else ""
    return returncode, dialog.lines, stderr


def test_claude_code_signs_in_through_the_gateway_and_runs_claude_p(
    governed: None, machine: Machine, gateway: GatewayServer
):
    returncode, questions, stderr = login(machine)

    assert returncode == 0, (questions, stderr)
    polling = next(q for q in questions if q["state"] == "polling")
    assert polling["verificationUri"] == signin_base(gateway.base_url) + "/device"
    session = SignInSession.objects.get()
    assert session.client.startswith("claude-code/")  # its User-Agent

    assert CLAUDE is not None
    run = subprocess.run(
        [CLAUDE, "-p", "say hello"],
        env=machine.env,
        cwd=machine.home,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )

    assert run.returncode == 0, (run.stdout, run.stderr)
    assert run.stdout.strip().startswith(MOCK_REPLY)
    wait_for(lambda: UsageRecord.objects.filter(status=200).exists(), 10)
    row = UsageRecord.objects.filter(status=200).latest("created_at")
    assert (row.key_id, row.team_id) == (session.key_id, session.team_id)
    assert row.route == "claude_code.messages"
    assert row.requested_model.startswith(MANAGED_MODEL)  # the team's managed settings applied
