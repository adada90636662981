"""The gateway as a real server process, started the way `make run` starts it (uvicorn) and
the way the docker image starts it (docker/entrypoint.sh: gunicorn with gatewaysite.workers),
on the test database, in front of the fake upstream: graceful shutdown while a stream is in
flight, and which forwarded headers the server believes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import anthropic
import httpx
import pytest
from anthropic.types import Message, MessageParam, TextBlock
from django.db import connection

from telemetry.models import UsageRecord
from tests.fakes.anthropic_upstream import FakeAnthropic, Reply
from tests.proxy.conftest import Governed, free_port

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
PROMPT: list[MessageParam] = [{"role": "user", "content": "Write a long answer"}]
WORDS = "one two three four five six seven eight"
# About 22 SSE events: a stream that is still running for a while after the signal.
SLOW_STREAM = Reply(text=WORDS, deltas=8, chunk_delay=0.1, output_tokens=40)


def database_url() -> str:
    """The test database (not the one named in settings) as a DATABASE_URL for the server."""
    db = connection.settings_dict
    if db["ENGINE"] == "django.db.backends.sqlite3":
        return f"sqlite:///{db['NAME']}"
    credentials = quote(db["USER"] or "", safe="")
    if db["PASSWORD"]:
        credentials += ":" + quote(db["PASSWORD"], safe="")
    return f"postgres://{credentials}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


@dataclass
class ServerProcess:
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def anthropic_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/anthropic"

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def wait(self) -> int:
        """The exit status; the bound only keeps a broken shutdown from hanging the suite."""
        try:
            return self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            raise AssertionError("the gateway did not exit:\n" + self.output()) from None

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def kill(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)  # its own group: gunicorn's workers too
            self.process.wait(timeout=10)


def server_command(kind: str, port: int, drain_seconds: int) -> list[str]:
    if kind == "uvicorn":  # as the Makefile's `run` target starts it
        return [
            str(BIN / "uvicorn"),
            "gatewaysite.asgi:application",
            *("--host", "127.0.0.1", "--port", str(port), "--no-access-log", "--lifespan", "auto"),
            *("--timeout-graceful-shutdown", str(drain_seconds)),
            *("--forwarded-allow-ips", ""),  # GATEWAY_TRUSTED_PROXIES, empty here
        ]
    return ["sh", str(ROOT / "docker" / "entrypoint.sh"), "serve"]


def start_server(
    kind: str,
    tmp_path: Path,
    *,
    drain_seconds: int = 600,
    gunicorn_args: str = "",
    extra_env: dict[str, str] | None = None,
) -> ServerProcess:
    port = free_port()
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        # Production settings, on this test's database (and Redis, when REDIS_URL is set).
        "DJANGO_SETTINGS_MODULE": "gatewaysite.settings",
        "DATABASE_URL": database_url(),
        "GATEWAY_IN_PROCESS_JOBS": "false",
        "GATEWAY_SPOOL_DIR": str(tmp_path / "spool"),
        "GATEWAY_POLICY_VERSION_FILE": str(tmp_path / "policy-version"),
        "GATEWAY_DRAIN_SECONDS": str(drain_seconds),
        "GATEWAY_TRUSTED_PROXIES": "",
        "GATEWAY_OUTBOUND_ALLOWED_NETWORKS": "127.0.0.0/8",  # the fake upstream
        "LOG_LEVEL": "WARNING",
        **(extra_env or {}),
    }
    if kind == "gunicorn":  # docker/entrypoint.sh
        env |= {
            "HOST": "127.0.0.1",
            "PORT": str(port),
            "WEB_CONCURRENCY": "1",
            "GATEWAY_MIGRATE": "false",
            "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prometheus"),
            "GUNICORN_CMD_ARGS": gunicorn_args,
        }
    log = tmp_path / f"{kind}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            server_command(kind, port, drain_seconds),
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = ServerProcess(process, port, log)
    try:
        wait_until_serving(server)
    except BaseException:
        server.kill()
        raise
    return server


def wait_until_serving(server: ServerProcess) -> None:
    deadline = time.monotonic() + 60  # a cold start on a busy machine
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise AssertionError("the gateway did not start:\n" + server.output())
        try:
            if httpx.get(f"http://127.0.0.1:{server.port}/healthz", timeout=2).is_success:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError("the gateway did not answer /healthz:\n" + server.output())


def refuses_connections(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


def wait_until_refusing(port: int) -> None:
    deadline = time.monotonic() + 10
    while not refuses_connections(port):
        if time.monotonic() > deadline:
            raise AssertionError("the gateway still accepts connections after SIGTERM")
        time.sleep(0.05)


@pytest.fixture
def servers() -> Iterator[list[ServerProcess]]:
    started: list[ServerProcess] = []
    yield started
    for server in started:
        server.kill()


def stream_through(
    server: ServerProcess, secret: str, events: list[str], *, on_first_event: Callable[[], None]
) -> Message | None:
    """Stream a message into `events` (their types); call `on_first_event` once the stream has
    begun. Returns the final message, or None if the stream was cut."""
    client = anthropic.Anthropic(
        base_url=server.anthropic_url, api_key=secret, max_retries=0, timeout=30
    )
    try:
        with client.messages.stream(
            model="claude-sonnet-4-6", max_tokens=100, messages=PROMPT
        ) as stream:
            for event in stream:
                events.append(event.type)
                if len(events) == 1:
                    on_first_event()
            return stream.get_final_message()
    except Exception:  # a cut stream: whatever transport error the SDK's HTTP client raises
        return None


def text_of(message: Message) -> str:
    return "".join(block.text for block in message.content if isinstance(block, TextBlock))


@pytest.mark.parametrize("kind", ["uvicorn", "gunicorn"])
def test_sigterm_lets_the_stream_in_flight_finish_and_records_it(
    kind: str, servers, governed: Governed, fake_upstream: FakeAnthropic, tmp_path: Path
):
    fake_upstream.default = SLOW_STREAM
    server = start_server(kind, tmp_path)
    servers.append(server)
    events: list[str] = []
    events_at_refusal: list[int] = []

    def terminate() -> None:
        server.signal(signal.SIGTERM)
        wait_until_refusing(server.port)  # new connections: refused at once
        events_at_refusal.append(len(events))

    final = stream_through(server, governed.secret, events, on_first_event=terminate)

    assert final is not None, server.output()
    assert events[-1] == "message_stop" and text_of(final) == WORDS
    assert events_at_refusal == [1]  # the stream went on after the server stopped accepting
    # It exits by itself once the stream is done (uvicorn re-raises the signal it handled).
    assert server.wait() in (0, -signal.SIGTERM)
    assert "Application shutdown complete" in server.output()  # the lifespan ran
    [row] = UsageRecord.objects.all()
    assert (row.status, row.stream) == (200, True)
    assert (row.input_tokens, row.output_tokens) == (25, 40)
    assert row.cost_micros == 25 * 3 + 40 * 15  # Sonnet 4.6: $3 / $15 per MTok


def test_a_stream_longer_than_the_drain_is_cut_and_still_recorded(
    servers, governed: Governed, fake_upstream: FakeAnthropic, tmp_path: Path
):
    # Some 20 s of stream against a one-second drain: gunicorn's own grace (31 s) would let
    # it finish; the worker's drain limit must cut it.
    fake_upstream.default = Reply(text=WORDS, deltas=8, chunk_delay=1.0, output_tokens=40)
    server = start_server("gunicorn", tmp_path, drain_seconds=1)
    servers.append(server)
    events: list[str] = []

    final = stream_through(
        server, governed.secret, events, on_first_event=lambda: server.signal(signal.SIGTERM)
    )

    assert final is None and "message_stop" not in events
    assert server.wait() == 0, server.output()
    [row] = UsageRecord.objects.all()  # written by the lifespan before the worker exited
    assert row.stream and row.input_tokens == 25 and row.output_tokens < 40
    assert row.error_type == "api_error" and "shut down" in row.error_message


def test_a_worker_retired_while_the_arbiter_runs_on_is_not_killed_as_hung(
    servers, governed: Governed, fake_upstream: FakeAnthropic, tmp_path: Path
):
    # TTIN then TTOU: gunicorn adds a worker and retires the oldest, the one serving the
    # stream, while its arbiter keeps watching --timeout (as with --max-requests). A draining
    # worker that stopped reporting in would be killed as hung within 6 s; the stream runs
    # for about 8 s.
    fake_upstream.default = Reply(text=WORDS, deltas=4, chunk_delay=0.6, output_tokens=40)
    server = start_server("gunicorn", tmp_path, gunicorn_args="--timeout 5")
    servers.append(server)
    events: list[str] = []

    def retire_the_worker() -> None:
        server.signal(signal.SIGTTIN)
        server.signal(signal.SIGTTOU)

    final = stream_through(server, governed.secret, events, on_first_event=retire_the_worker)

    assert final is not None and text_of(final) == WORDS, server.output()
    server.signal(signal.SIGTERM)
    assert server.wait() == 0
    [row] = UsageRecord.objects.all()
    assert (row.status, row.output_tokens) == (200, 40)


@pytest.mark.parametrize("kind", ["uvicorn", "gunicorn"])
def test_forwarded_for_from_an_untrusted_peer_does_not_change_the_client(
    kind: str, servers, governed: Governed, tmp_path: Path
):
    # No trusted proxies: 127.0.0.1, which uvicorn and gunicorn trust by default, is not one.
    # Were the server to believe X-Forwarded-For, each failure would seem to come from another
    # address and the per-address throttle (2 failures a minute here) would never trip.
    server = start_server(kind, tmp_path, extra_env={"GATEWAY_AUTH_FAILURES_PER_MINUTE": "2"})
    servers.append(server)
    statuses = [
        httpx.post(
            server.anthropic_url + "/v1/messages",
            headers={"x-api-key": f"sk-gw-not-a-key-{n}", "x-forwarded-for": f"203.0.113.{n}"},
            json={"model": "claude-sonnet-4-6", "max_tokens": 10, "messages": PROMPT},
            timeout=10,
        ).status_code
        for n in range(3)
    ]
    assert statuses == [401, 401, 429]


@pytest.mark.parametrize("value", ["10.0.0.1/8", "not-an-address"])
def test_a_malformed_trusted_proxy_stops_the_gateway_at_start(value: str):
    # gunicorn refuses the same value for --forwarded-allow-ips; the gateway says which
    # variable is wrong before any server starts.
    result = subprocess.run(
        [sys.executable, "-c", "import gatewaysite.settings"],
        cwd=ROOT,
        env={**os.environ, "GATEWAY_TRUSTED_PROXIES": f"127.0.0.1, {value}"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "ImproperlyConfigured: GATEWAY_TRUSTED_PROXIES" in result.stderr
