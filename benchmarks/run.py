"""Benchmark the gateway's hot path: added latency and requests per second of one worker.

    python benchmarks/run.py            # full run, about 3 minutes
    python benchmarks/run.py --quick    # about 40 seconds

What it does: makes a throwaway SQLite database in a temp dir (or uses DATABASE_URL / REDIS_URL
when set), migrates it, seeds an organization, team, key, budgets, a rate limit and a route to a
fast fake Anthropic upstream through the governance services, then starts the fake upstream and
the gateway (uvicorn, ONE worker) as subprocesses. The gateway is pinned to core 0, the
upstream and the load generator (this process) to core 1. Every cell (small or Claude Code-sized
body x JSON or SSE x concurrency) is measured calling the upstream directly and through the
gateway, with the same client; "added" is the difference. At the end the usage ledger is
checked to hold one row per request sent through the gateway, so the governed path (key
lookup, admission against budgets and rate limits, metering, ledger) really ran.

All traffic goes to 127.0.0.1 only. Every process started here is stopped at the end, on
errors too.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import bodies
import loadgen
import machine as machine_info

ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent
HOST = "127.0.0.1"
GATEWAY_CORE = 0
CLIENT_CORE = 1


@dataclass(frozen=True)
class Cell:
    body: str  # "small" | "large"
    mode: str  # "json" | "sse"
    concurrency: int

    @property
    def label(self) -> str:
        return f"{self.mode} {self.body} c={self.concurrency}"


@dataclass
class CellReport:
    body: str
    mode: str
    concurrency: int
    body_bytes: int
    direct_n: int
    gateway_n: int
    errors: int
    direct_p50_ms: float
    direct_p99_ms: float
    gateway_p50_ms: float
    gateway_p99_ms: float
    added_p50_ms: float
    added_p99_ms: float
    ttfb_added_p50_ms: float
    ttfb_added_p99_ms: float
    direct_rps: float
    gateway_rps: float
    gateway_cpu_us_per_request: float
    gateway_cpu_share: float  # of one core, while the cell ran
    floor_added_p50_ms: float
    floor_added_p99_ms: float
    floor_rps: float
    floor_cpu_us_per_request: float

    @property
    def cpu_bound_rps(self) -> float:
        """Requests per second one fully busy core would serve at this CPU cost."""
        cost = self.gateway_cpu_us_per_request
        return 1_000_000 / cost if cost else 0.0


# --- processes -------------------------------------------------------------------------------


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
    command: list[str], env: dict[str, str], log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """Run a subprocess for the duration of the block; stop it gracefully, then firmly."""
    with log.open("wb") as sink:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=sink, stderr=sink)
        try:
            yield process
        finally:
            stop(process)


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


def manage(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode:
        raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def seed_script(env: dict[str, str], *args: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, str(HERE / "seed.py"), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode:
        raise RuntimeError(f"seed.py {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
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
    run_tag = f"gwbench{os.getpid()}"
    # Shared Redis: keep this run's counters and cache keys apart from anything else.
    env.setdefault("GATEWAY_COUNTER_PREFIX", f"{run_tag}:c")
    env.setdefault("GATEWAY_CACHE_PREFIX", run_tag)
    return env


# --- measuring -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Endpoints:
    upstream_port: int
    gateway_port: int
    floor_port: int
    secret: str

    def port(self, via: str) -> int:
        return {"direct": self.upstream_port, "gateway": self.gateway_port}.get(
            via, self.floor_port
        )

    def request(self, cell: Cell, via: str) -> bytes:
        """The request bytes for `via` "direct" (the upstream), "gateway" or "floor"."""
        stream = cell.mode == "sse"
        body = (
            bodies.claude_code_body(stream=stream)
            if cell.body == "large"
            else bodies.small_body(stream=stream)
        )
        path = "/v1/messages?beta=true" if via == "direct" else "/anthropic/v1/messages?beta=true"
        key = self.secret if via == "gateway" else "sk-ant-bench-direct"
        return loadgen.build_request(
            host=HOST,
            port=self.port(via),
            path=path,
            headers=bodies.claude_code_headers(key),
            body=body,
        )


def ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


@dataclass
class Run:
    result: loadgen.CellResult
    cpu: float  # seconds of the server process's CPU while it ran
    wall: float

    @property
    def cpu_us_per_request(self) -> float:
        return round(self.cpu / len(self.result.samples) * 1e6, 1) if self.result.samples else 0.0


async def run_one(
    cell: Cell, endpoints: Endpoints, via: str, pid: int | None, duration: float
) -> Run:
    cpu_before = cpu_seconds(pid) if pid else 0.0
    wall_before = time.perf_counter()
    result = await loadgen.run(
        host=HOST,
        port=endpoints.port(via),
        request=endpoints.request(cell, via),
        concurrency=cell.concurrency,
        duration=duration,
    )
    cpu = cpu_seconds(pid) - cpu_before if pid else 0.0
    return Run(result, cpu, time.perf_counter() - wall_before)


async def measure(
    cell: Cell, endpoints: Endpoints, pids: dict[str, int], duration: float
) -> tuple[CellReport, int]:
    """Direct, the floor, then the gateway. Returns the report and the gateway requests sent."""
    direct = (await run_one(cell, endpoints, "direct", None, duration)).result
    floor = await run_one(cell, endpoints, "floor", pids["floor"], duration)
    gateway = await run_one(cell, endpoints, "gateway", pids["gateway"], duration)
    through = gateway.result
    d_lat = [s.latency for s in direct.ok]
    g_lat = [s.latency for s in through.ok]
    f_lat = [s.latency for s in floor.result.ok]
    d_ttfb = [s.ttfb for s in direct.ok]
    g_ttfb = [s.ttfb for s in through.ok]
    p = loadgen.percentile
    gateway_request = endpoints.request(cell, "gateway")
    body_bytes = len(gateway_request) - gateway_request.index(b"\r\n\r\n") - 4
    report = CellReport(
        body=cell.body,
        mode=cell.mode,
        concurrency=cell.concurrency,
        body_bytes=body_bytes,
        direct_n=len(direct.samples),
        gateway_n=len(through.samples),
        errors=direct.errors + through.errors + floor.result.errors,
        direct_p50_ms=ms(p(d_lat, 0.50)),
        direct_p99_ms=ms(p(d_lat, 0.99)),
        gateway_p50_ms=ms(p(g_lat, 0.50)),
        gateway_p99_ms=ms(p(g_lat, 0.99)),
        added_p50_ms=ms(p(g_lat, 0.50) - p(d_lat, 0.50)),
        added_p99_ms=ms(p(g_lat, 0.99) - p(d_lat, 0.99)),
        ttfb_added_p50_ms=ms(p(g_ttfb, 0.50) - p(d_ttfb, 0.50)),
        ttfb_added_p99_ms=ms(p(g_ttfb, 0.99) - p(d_ttfb, 0.99)),
        direct_rps=round(direct.requests_per_second, 1),
        gateway_rps=round(through.requests_per_second, 1),
        gateway_cpu_us_per_request=gateway.cpu_us_per_request,
        gateway_cpu_share=round(gateway.cpu / gateway.wall, 3) if gateway.wall else 0.0,
        floor_added_p50_ms=ms(p(f_lat, 0.50) - p(d_lat, 0.50)),
        floor_added_p99_ms=ms(p(f_lat, 0.99) - p(d_lat, 0.99)),
        floor_rps=round(floor.result.requests_per_second, 1),
        floor_cpu_us_per_request=floor.cpu_us_per_request,
    )
    first_error = direct.first_error or floor.result.first_error or through.first_error
    if first_error:
        print(f"  {cell.label}: errors: {first_error}")
    return report, len(through.samples)


async def smoke_test(endpoints: Endpoints) -> None:
    """One request of each kind through the gateway and the floor must succeed first."""
    for via in ("gateway", "floor"):
        for mode in ("json", "sse"):
            cell = Cell("small", mode, 1)
            result = await loadgen.run(
                host=HOST,
                port=endpoints.port(via),
                request=endpoints.request(cell, via),
                concurrency=1,
                duration=10,
                max_requests=1,
            )
            if result.errors or not result.samples:
                raise RuntimeError(f"smoke test through the {via} failed: {result.first_error}")


async def warm_up(endpoints: Endpoints, cells: list[Cell], seconds: float) -> int:
    """Load snapshots, seed counters, fill connection pools. Returns gateway requests sent."""
    sent = 0
    kinds = sorted({(c.body, c.mode) for c in cells})
    for body, mode in kinds:
        cell = Cell(body, mode, 10)
        for via in ("direct", "floor", "gateway"):
            result = await loadgen.run(
                host=HOST,
                port=endpoints.port(via),
                request=endpoints.request(cell, via),
                concurrency=10,
                duration=seconds / len(kinds) / 3,
            )
            if via == "gateway":
                sent += len(result.samples)
    return sent


# --- reporting -------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    return {
        **machine_info.describe(),
        "uvicorn_loop": "uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
        "uvicorn_http": "httptools" if importlib.util.find_spec("httptools") else "h11",
    }


def _cell_name(r: CellReport) -> str:
    return f"{r.mode.upper()} {r.body} ({r.body_bytes / 1000:.1f} kB) c={r.concurrency}"


def table(reports: list[CellReport]) -> str:
    rows = [
        "| cell | direct p50 / p99 | gateway p50 / p99 | **added p50 / p99** "
        "| TTFB added p50 / p99 | **gateway req/s** | n |",
        "|" + "---|" * 7,
    ]
    for r in reports:
        rows.append(
            f"| {_cell_name(r)} "
            f"| {r.direct_p50_ms:.2f} / {r.direct_p99_ms:.2f} ms "
            f"| {r.gateway_p50_ms:.2f} / {r.gateway_p99_ms:.2f} ms "
            f"| **{r.added_p50_ms:.2f} / {r.added_p99_ms:.2f} ms** "
            f"| {r.ttfb_added_p50_ms:.2f} / {r.ttfb_added_p99_ms:.2f} ms "
            f"| **{r.gateway_rps:,.0f}** | {r.gateway_n:,} |"
        )
    return "\n".join(rows)


def cost_table(reports: list[CellReport]) -> str:
    rows = [
        "| cell | floor added p50 / p99 | floor req/s | floor CPU/req | gateway CPU/req "
        "| gateway core busy | gateway CPU-bound req/s |",
        "|" + "---|" * 7,
    ]
    for r in reports:
        rows.append(
            f"| {_cell_name(r)} "
            f"| {r.floor_added_p50_ms:.2f} / {r.floor_added_p99_ms:.2f} ms "
            f"| {r.floor_rps:,.0f} | {r.floor_cpu_us_per_request:,.0f} µs "
            f"| {r.gateway_cpu_us_per_request:,.0f} µs | {r.gateway_cpu_share:.0%} "
            f"| {r.cpu_bound_rps:,.0f} |"
        )
    return "\n".join(rows)


def verdict(reports: list[CellReport]) -> list[str]:
    lines = []
    for r in reports:
        if (r.body, r.mode, r.concurrency) == ("small", "json", 1):
            ok = "met" if r.added_p50_ms <= 1.0 else "MISSED"
            lines.append(
                f"target: added p50 <= 1 ms (JSON, small, c=1): {r.added_p50_ms:.2f} ms -> {ok}"
            )
        if (r.body, r.mode, r.concurrency) == ("small", "json", 10):
            ok = "met" if r.gateway_rps >= 1000 else "MISSED"
            lines.append(
                f"target: >= 1,000 req/s (JSON, small, c=10): {r.gateway_rps:,.0f} req/s -> {ok} "
                f"(at {r.gateway_cpu_us_per_request:,.0f} µs of CPU per request a fully busy "
                f"core would serve {r.cpu_bound_rps:,.0f}; the floor served {r.floor_rps:,.0f})"
            )
    return lines


# --- main ------------------------------------------------------------------------------------


def cells_for(args: argparse.Namespace) -> list[Cell]:
    return [
        Cell(body, mode, concurrency)
        for body in args.bodies
        for mode in args.modes
        for concurrency in args.concurrency
    ]


async def benchmark(
    args: argparse.Namespace, endpoints: Endpoints, pids: dict[str, int]
) -> tuple[list[CellReport], int]:
    cells = cells_for(args)
    await smoke_test(endpoints)
    sent = 2 + await warm_up(endpoints, cells, args.warmup)
    reports = []
    for cell in cells:
        report, n = await measure(cell, endpoints, pids, args.duration)
        sent += n
        reports.append(report)
        print(
            f"  {cell.label:<17} added p50 {report.added_p50_ms:6.2f} ms  "
            f"p99 {report.added_p99_ms:6.2f} ms  gateway {report.gateway_rps:6,.0f} req/s  "
            f"(floor: added p50 {report.floor_added_p50_ms:5.2f} ms, "
            f"{report.floor_rps:6,.0f} req/s)",
            flush=True,
        )
    return reports, sent


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short cells (~40 s in all)")
    parser.add_argument("--duration", type=float, help="seconds per measurement")
    parser.add_argument("--warmup", type=float, help="seconds of warm-up traffic")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 10, 50])
    parser.add_argument(
        "--bodies", nargs="+", choices=["small", "large"], default=["small", "large"]
    )
    parser.add_argument("--modes", nargs="+", choices=["json", "sse"], default=["json", "sse"])
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to cores")
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs, database)")
    args = parser.parse_args()
    if args.duration is None:
        args.duration = 0.6 if args.quick else 4.0
    if args.warmup is None:
        args.warmup = 2.0 if args.quick else 6.0
    return args


def server_command(app: str, port: int, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "uvicorn", app, "--host", HOST, "--port", str(port),
        "--no-access-log", "--log-level", "warning", *extra,
    ]  # fmt: skip


def report(
    info: dict[str, Any], reports: list[CellReport], ledger: dict[str, Any], sent: int
) -> bool:
    """Print the results; True when the ledger holds exactly the requests sent."""
    print()
    print(table(reports))
    print()
    print(cost_table(reports))
    print()
    for line in verdict(reports):
        print(line)
    complete = ledger["rows"] == sent and set(ledger["by_status"]) == {"200"}
    print(
        f"usage ledger: {ledger['rows']:,} rows for {sent:,} requests sent through the "
        f"gateway ({ledger['streamed']:,} streamed), statuses {ledger['by_status']}, "
        f"metered ${ledger['cost_micros'] / 1e6:,.2f} -> {'OK' if complete else 'MISMATCH'}"
    )
    print(
        f"load average (1 min) at start {info['loadavg_start'][0]:.2f}, at end "
        f"{info['loadavg_end'][0]:.2f}; on {info['cores']} cores anything much above 1.5 means "
        "other processes competed for the cores"
    )
    return complete


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds through the `finally`s that stop the processes


def main() -> int:
    args = parse_args()
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    pin = not args.no_pin and (os.cpu_count() or 1) >= 2 and hasattr(os, "sched_setaffinity")
    workdir = Path(tempfile.mkdtemp(prefix="gw-bench-"))
    env = bench_env(workdir)
    info = machine()
    info.update(
        pinned=pin,
        database=env["DATABASE_URL"].split("://", 1)[0],
        counters="redis" if env.get("REDIS_URL") else "memory",
    )
    print(
        f"machine: {info['cpu']}, {info['cores']} cores, Python {info['python']}, "
        f"load {info['loadavg_start'][0]:.2f}; uvicorn {info['uvicorn_loop']}+"
        f"{info['uvicorn_http']}; database {info['database']}, counters {info['counters']}; "
        f"pinned: {pin}",
        flush=True,
    )
    upstream_port, gateway_port, floor_port = free_port(), free_port(), free_port()
    env["BENCH_UPSTREAM"] = f"http://{HOST}:{upstream_port}"
    try:
        manage(env, "migrate", "--noinput")
        with contextlib.ExitStack() as stack:
            upstream_command = [sys.executable, str(HERE / "fake_upstream.py")]
            upstream = stack.enter_context(
                started(
                    pinned([*upstream_command, "--port", str(upstream_port)], CLIENT_CORE, pin),
                    env,
                    workdir / "upstream.log",
                )
            )
            wait_for_port(upstream_port, upstream)
            ids = seed_script(
                env,
                "seed",
                "--upstream",
                env["BENCH_UPSTREAM"],
                "--secret-file",
                str(workdir / "key.secret"),
            )
            floor = stack.enter_context(
                started(
                    pinned(
                        server_command("bare_proxy:app", floor_port, "--app-dir", str(HERE)),
                        GATEWAY_CORE,
                        pin,
                    ),
                    env,
                    workdir / "floor.log",
                )
            )
            gateway = stack.enter_context(
                started(
                    pinned(
                        server_command("gatewaysite.asgi:application", gateway_port),
                        GATEWAY_CORE,
                        pin,
                    ),
                    env,
                    workdir / "gateway.log",
                )
            )
            wait_for_port(floor_port, floor)
            wait_for_port(gateway_port, gateway)
            if pin:
                os.sched_setaffinity(0, {CLIENT_CORE})
            secret = (workdir / "key.secret").read_text().strip()
            endpoints = Endpoints(upstream_port, gateway_port, floor_port, secret)
            print(f"gateway pid {gateway.pid}, floor pid {floor.pid}; measuring", flush=True)
            pids = {"gateway": gateway.pid, "floor": floor.pid}
            reports, sent = asyncio.run(benchmark(args, endpoints, pids))
            stop(gateway)  # its shutdown flushes the pending usage events to the ledger
            ledger = seed_script(env, "ledger", "--key-id", str(ids["key_id"]))
        info["loadavg_end"] = os.getloadavg()
        complete = report(info, reports, ledger, sent)
        if args.json:
            results = {
                "machine": info,
                "args": {k: str(v) for k, v in vars(args).items()},
                "cells": [asdict(r) for r in reports],
                "ledger": ledger,
                "sent": sent,
            }
            args.json.write_text(json.dumps(results, indent=2))
        return 0 if complete and not any(r.errors for r in reports) else 1
    finally:
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
