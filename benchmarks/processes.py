"""Processes of a benchmark run: starting, pinning, waiting for and stopping the servers, their
environment, their CPU time, and the Django commands and seed script run beside them."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent
HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def pinned(command: list[str], core: int, pin: bool) -> list[str]:
    if pin and shutil.which("taskset"):
        return ["taskset", "-c", str(core), *command]
    return command


def wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"process {process.args!r} exited with {process.returncode}")
        with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {HOST}:{port} after {timeout} s")


@contextlib.contextmanager
def started(
    command: list[str],
    env: dict[str, str],
    log: Path,
    stop_timeout: float = 20.0,
    cwd: Path = ROOT,
) -> Iterator[subprocess.Popen[bytes]]:
    """Run a subprocess for the duration of the block; stop it gracefully, then firmly."""
    with log.open("wb") as sink:
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=sink, stderr=sink)
        try:
            yield process
        finally:
            stop(process, stop_timeout)


def stop(process: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc; 0.0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def _run_python(env: dict[str, str], script: Path, *args: str, cwd: Path = ROOT) -> str:
    """Run a Python script of the project to its end; its stdout, or an error with its output."""
    done = subprocess.run(
        [sys.executable, str(script), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode:
        raise RuntimeError(f"{script.name} {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def manage(env: dict[str, str], *args: str, tree: Path = ROOT) -> str:
    """manage.py of `tree` (this checkout unless given)."""
    return _run_python(env, tree / "manage.py", *args, cwd=tree)


def seed_script(env: dict[str, str], *args: str, tree: Path = ROOT) -> dict[str, Any]:
    """This checkout's seed.py, run against the code and models of `tree` (BENCH_TREE)."""
    env = {**env, "BENCH_TREE": str(tree)}
    output = _run_python(env, HERE / "seed.py", *args, cwd=tree)
    result: dict[str, Any] = json.loads(output.strip().splitlines()[-1])
    return result


def bench_env(workdir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("DATABASE_URL", f"sqlite:///{workdir / 'bench.sqlite3'}")
    env["DJANGO_SETTINGS_MODULE"] = "gatewaysite.settings"
    env["DJANGO_SECRET_KEY"] = secrets.token_urlsafe(50)
    env["DJANGO_DEBUG"] = "0"
    env["GATEWAY_SPOOL_DIR"] = str(workdir / "spool")
    # The fake upstream listens on loopback, which provider base URLs may not reach otherwise.
    env["GATEWAY_OUTBOUND_ALLOWED_NETWORKS"] = "127.0.0.0/8"
    env["LOG_LEVEL"] = "WARNING"
    env["PYTHONUNBUFFERED"] = "1"
    isolate_aws(env, workdir)
    run_tag = f"gwbench{os.getpid()}"
    # Shared Redis: keep this run's counters and cache keys apart from anything else.
    env.setdefault("GATEWAY_COUNTER_PREFIX", f"{run_tag}:c")
    env.setdefault("GATEWAY_CACHE_PREFIX", run_tag)
    return env


def isolate_aws(env: dict[str, str], workdir: Path) -> None:
    """Nothing the Bedrock adapter's botocore does may leave 127.0.0.1 or read the machine's
    AWS setup: no inherited AWS_* settings, empty config and credential files, no IMDS."""
    for name in [name for name in env if name.startswith("AWS_")]:
        del env[name]
    for name, file in (
        ("AWS_CONFIG_FILE", "aws-config"),
        ("AWS_SHARED_CREDENTIALS_FILE", "aws-credentials"),
    ):
        path = workdir / file
        path.touch(mode=0o600)
        env[name] = str(path)
    env["AWS_EC2_METADATA_DISABLED"] = "true"


def server_command(app: str, port: int, *extra: str, wrapper: tuple[str, ...] = ()) -> list[str]:
    return [
        *wrapper, sys.executable, "-m", "uvicorn", app, "--host", HOST, "--port", str(port),
        "--no-access-log", "--log-level", "warning", *extra,
    ]  # fmt: skip


def wrapped(wrapper: str, name: str) -> tuple[str, ...]:
    """The --wrapper command for the gateway or the floor, {name} filled in."""
    return tuple(shlex.split(wrapper.replace("{name}", name)))
