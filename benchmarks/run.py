"""Benchmark the gateway's hot path: added latency and requests per second of one worker.

    python benchmarks/run.py            # full run, about 3 minutes
    python benchmarks/run.py --quick    # about 40 seconds
    python benchmarks/run.py --providers anthropic openai bedrock   # + translated and Bedrock

What it does: makes a throwaway SQLite database in a temp dir (or uses DATABASE_URL / REDIS_URL
when set), migrates it, seeds an organization, team, key, budgets, a rate limit and a route to a
fast fake Anthropic upstream through the governance services, then starts the fake upstream and
the gateway (uvicorn, ONE worker) as subprocesses. The gateway is pinned to core 0, the
upstream and the load generator (this process) to core 1. Every cell (small or Claude Code-sized
body x JSON or SSE x concurrency) is measured calling the upstream directly and through the
gateway, with the same client; "added" is the difference. At the end the usage ledger is
checked to hold one row per request sent through the gateway, so the governed path (key
lookup, admission against budgets and rate limits, metering, ledger) really ran.

`--providers` adds cells for the other provider adapters, with the same client speaking
Anthropic to the gateway: `openai` routes the model to a fast fake OpenAI-compatible server
(fake_openai.py; the request and the answer are translated), `bedrock` to a fast fake Bedrock
runtime (fake_bedrock.py; every request SigV4-signed with static test keys, the binary event
stream decoded and re-emitted as SSE). Their "direct" reference is that fake called in its own
protocol (REFERENCES says exactly how); the ledger is checked per provider.

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
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import bench_routes as routes
import bodies
import loadgen
import machine as machine_info
import orjson
from processes import (
    HERE,
    HOST,
    bench_env,
    cpu_seconds,
    free_port,
    manage,
    pinned,
    seed_script,
    server_command,
    started,
    stop,
    wait_for_port,
    wrapped,
)

ROOT = HERE.parent
# For proxy.translate (pure functions), which builds the OpenAI fake's direct requests.
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))
GATEWAY_CORE = 0
CLIENT_CORE = 1
ANTHROPIC = "anthropic"
# The fake upstream of each provider and the name it prints in the output.
FAKES = {
    "anthropic": ("fake_upstream.py", "fake Anthropic upstream"),
    "openai": ("fake_openai.py", "fake OpenAI-compatible server"),
    "bedrock": ("fake_bedrock.py", "fake Bedrock runtime"),
}
# What "direct" is for each provider's cells: "added" = through the gateway minus this.
REFERENCES = {
    "anthropic": "direct = the fake Anthropic upstream, POST /v1/messages with the same request "
    "bytes the gateway gets; floor = a bare pass-through proxy to it (no governance)",
    "openai": "direct = the fake OpenAI-compatible server, POST /v1/chat/completions with the "
    "body the gateway's translation sends (Bearer key); added = governance + translation of "
    "the request and the answer (JSON or SSE)",
    "bedrock": "direct = the fake Bedrock runtime, POST /model/{id}/invoke or "
    "/invoke-with-response-stream with the InvokeModel body, UNSIGNED; added = governance + "
    "SigV4 signing + (SSE) decoding the binary event stream and re-emitting Anthropic SSE",
}


@dataclass(frozen=True)
class Cell:
    body: str  # "small" | "large"
    mode: str  # "json" | "sse"
    concurrency: int
    provider: str = ANTHROPIC  # "anthropic" | "openai" | "bedrock"

    @property
    def label(self) -> str:
        prefix = "" if self.provider == ANTHROPIC else f"{self.provider} "
        return f"{prefix}{self.mode} {self.body} c={self.concurrency}"


@dataclass
class CellReport:
    provider: str
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
    # The floor is measured for the Anthropic cells only (None for the others).
    floor_added_p50_ms: float | None = None
    floor_added_p99_ms: float | None = None
    floor_rps: float | None = None
    floor_cpu_us_per_request: float | None = None
    floor_n: int = 0

    @property
    def cpu_bound_rps(self) -> float:
        """Requests per second one fully busy core would serve at this CPU cost."""
        cost = self.gateway_cpu_us_per_request
        return 1_000_000 / cost if cost else 0.0


# --- measuring -------------------------------------------------------------------------------


def anthropic_body(cell: Cell) -> bytes:
    """What the client sends the gateway for the cell (Anthropic Messages)."""
    stream = cell.mode == "sse"
    model = routes.CLIENT_MODELS[cell.provider]
    if cell.body == "large":
        return bodies.claude_code_body(stream=stream, model=model)
    return bodies.small_body(stream=stream, model=model)


def openai_direct(cell: Cell) -> tuple[str, list[tuple[str, str]], bytes]:
    """The chat completion request the gateway's translation sends for the cell."""
    from proxy.translate import anthropic_request_to_openai  # pure: no Django, no I/O

    body, _ = anthropic_request_to_openai(
        orjson.loads(anthropic_body(cell)),
        model=routes.OPENAI_MODEL,
        max_output_tokens=routes.OPENAI_MAX_OUTPUT_TOKENS,
    )
    headers = [
        ("Content-Type", "application/json"),
        ("Accept", "application/json"),
        ("Authorization", f"Bearer {routes.OPENAI_API_KEY}"),
        ("Connection", "keep-alive"),
    ]
    return "/v1/chat/completions", headers, orjson.dumps(body)


def bedrock_direct(cell: Cell) -> tuple[str, list[tuple[str, str]], bytes]:
    """The InvokeModel(WithResponseStream) request for the cell, unsigned (PROTOCOLS.md 4.1)."""
    body = {
        k: v for k, v in orjson.loads(anthropic_body(cell)).items() if k not in ("model", "stream")
    }
    body["anthropic_version"] = routes.BEDROCK_VERSION
    betas = dict(bodies.claude_code_headers(""))["anthropic-beta"]
    body["anthropic_beta"] = betas.split(",")
    stream = cell.mode == "sse"
    operation = "invoke-with-response-stream" if stream else "invoke"
    accept = "application/vnd.amazon.eventstream" if stream else "application/json"
    headers = [
        ("Content-Type", "application/json"),
        ("Accept", accept),
        ("Connection", "keep-alive"),
    ]
    return (
        f"/model/{quote(routes.BEDROCK_MODEL, safe=':')}/{operation}",
        headers,
        orjson.dumps(body),
    )


@dataclass(frozen=True)
class Endpoints:
    upstream_port: int  # the fake Anthropic upstream
    gateway_port: int
    floor_port: int
    secret: str
    fake_ports: Mapping[str, int] = field(default_factory=dict)  # the other providers' fakes

    def port(self, via: str, provider: str = ANTHROPIC) -> int:
        if via == "direct":
            return self.upstream_port if provider == ANTHROPIC else self.fake_ports[provider]
        return self.gateway_port if via == "gateway" else self.floor_port

    def request(self, cell: Cell, via: str) -> bytes:
        """The request bytes for `via` "direct" (the provider's fake), "gateway" or "floor"."""
        if via == "direct" and cell.provider == "openai":
            path, headers, body = openai_direct(cell)
        elif via == "direct" and cell.provider == "bedrock":
            path, headers, body = bedrock_direct(cell)
        else:
            path = (
                "/v1/messages?beta=true" if via == "direct" else "/anthropic/v1/messages?beta=true"
            )
            key = self.secret if via == "gateway" else "sk-ant-bench-direct"
            headers, body = bodies.claude_code_headers(key), anthropic_body(cell)
        return loadgen.build_request(
            host=HOST, port=self.port(via, cell.provider), path=path, headers=headers, body=body
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
        port=endpoints.port(via, cell.provider),
        request=endpoints.request(cell, via),
        concurrency=cell.concurrency,
        duration=duration,
    )
    cpu = cpu_seconds(pid) - cpu_before if pid else 0.0
    return Run(result, cpu, time.perf_counter() - wall_before)


async def measure(
    cell: Cell, endpoints: Endpoints, pids: dict[str, int], duration: float
) -> tuple[CellReport, int]:
    """Direct, the floor (Anthropic cells), then the gateway. Returns the report and the
    gateway requests sent."""
    direct = (await run_one(cell, endpoints, "direct", None, duration)).result
    floor = None
    if cell.provider == ANTHROPIC:
        floor = await run_one(cell, endpoints, "floor", pids["floor"], duration)
    gateway = await run_one(cell, endpoints, "gateway", pids["gateway"], duration)
    through = gateway.result
    d_lat = [s.latency for s in direct.ok]
    g_lat = [s.latency for s in through.ok]
    d_ttfb = [s.ttfb for s in direct.ok]
    g_ttfb = [s.ttfb for s in through.ok]
    p = loadgen.percentile
    gateway_request = endpoints.request(cell, "gateway")
    body_bytes = len(gateway_request) - gateway_request.index(b"\r\n\r\n") - 4
    report = CellReport(
        provider=cell.provider,
        body=cell.body,
        mode=cell.mode,
        concurrency=cell.concurrency,
        body_bytes=body_bytes,
        direct_n=len(direct.samples),
        gateway_n=len(through.samples),
        errors=direct.errors + through.errors + (floor.result.errors if floor else 0),
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
    )
    floor_error = ""
    if floor is not None:
        add_floor(report, floor, d_lat)
        floor_error = floor.result.first_error
    first_error = direct.first_error or floor_error or through.first_error
    if first_error:
        print(f"  {cell.label}: errors: {first_error}")
    return report, len(through.samples)


def add_floor(report: CellReport, floor: Run, d_lat: list[float]) -> None:
    p = loadgen.percentile
    f_lat = [s.latency for s in floor.result.ok]
    report.floor_added_p50_ms = ms(p(f_lat, 0.50) - p(d_lat, 0.50))
    report.floor_added_p99_ms = ms(p(f_lat, 0.99) - p(d_lat, 0.99))
    report.floor_rps = round(floor.result.requests_per_second, 1)
    report.floor_cpu_us_per_request = floor.cpu_us_per_request
    report.floor_n = len(floor.result.samples)


def vias(provider: str) -> tuple[str, ...]:
    return ("direct", "floor", "gateway") if provider == ANTHROPIC else ("direct", "gateway")


async def smoke_test(endpoints: Endpoints, providers: list[str]) -> dict[str, int]:
    """One request of each kind directly, through the gateway (and the floor) must succeed
    first. Returns the gateway requests sent, by provider."""
    sent = dict.fromkeys(providers, 0)
    for provider in providers:
        for via in vias(provider):
            for mode in ("json", "sse"):
                cell = Cell("small", mode, 1, provider)
                result = await loadgen.run(
                    host=HOST,
                    port=endpoints.port(via, provider),
                    request=endpoints.request(cell, via),
                    concurrency=1,
                    duration=10,
                    max_requests=1,
                )
                if via == "gateway":
                    sent[provider] += len(result.samples)
                if result.errors or not result.samples:
                    raise RuntimeError(
                        f"smoke test of {provider} {via} failed: {result.first_error}"
                    )
    return sent


async def warm_up(
    endpoints: Endpoints, cells: list[Cell], seconds: float, sent: dict[str, int]
) -> int:
    """Load snapshots, seed counters, fill connection pools, for `seconds` per provider.
    Adds the gateway requests sent to `sent`, by provider; returns the floor's requests."""
    floor_sent = 0
    for provider in dict.fromkeys(c.provider for c in cells):
        kinds = sorted({(c.body, c.mode) for c in cells if c.provider == provider})
        for body, mode in kinds:
            cell = Cell(body, mode, 10, provider)
            for via in vias(provider):
                result = await loadgen.run(
                    host=HOST,
                    port=endpoints.port(via, provider),
                    request=endpoints.request(cell, via),
                    concurrency=10,
                    duration=seconds / len(kinds) / len(vias(provider)),
                )
                if via == "gateway":
                    sent[provider] += len(result.samples)
                elif via == "floor":
                    floor_sent += len(result.samples)
    return floor_sent


# --- reporting -------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    return {
        **machine_info.describe(),
        "uvicorn_loop": "uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
        "uvicorn_http": "httptools" if importlib.util.find_spec("httptools") else "h11",
    }


def _cell_name(r: CellReport) -> str:
    return f"{r.mode.upper()} {r.body} ({r.body_bytes / 1000:.1f} kB) c={r.concurrency}"


def _ms_pair(p50: float | None, p99: float | None) -> str:
    return "n/a" if p50 is None or p99 is None else f"{p50:.2f} / {p99:.2f} ms"


def _number(value: float | None, unit: str = "") -> str:
    return "n/a" if value is None else f"{value:,.0f}{unit}"


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
            f"| {_ms_pair(r.floor_added_p50_ms, r.floor_added_p99_ms)} "
            f"| {_number(r.floor_rps)} | {_number(r.floor_cpu_us_per_request, ' µs')} "
            f"| {r.gateway_cpu_us_per_request:,.0f} µs | {r.gateway_cpu_share:.0%} "
            f"| {r.cpu_bound_rps:,.0f} |"
        )
    return "\n".join(rows)


def same_shape(r: CellReport, reports: list[CellReport]) -> CellReport | None:
    """The Anthropic cell of the same body, mode and concurrency, when it was measured."""
    key = (r.body, r.mode, r.concurrency)
    return next(
        (a for a in reports if a.provider == ANTHROPIC and (a.body, a.mode, a.concurrency) == key),
        None,
    )


def provider_table(reports: list[CellReport], all_reports: list[CellReport]) -> str:
    """The other providers' cells; "vs Anthropic" is their gateway CPU per request minus that
    of the Anthropic cell of the same shape: the cost of translation, or of SigV4 signing and
    event-stream decoding, next to the untranslated path."""
    rows = [
        "| cell | direct p50 / p99 | gateway p50 / p99 | **added p50 / p99** "
        "| TTFB added p50 / p99 | **gateway req/s** | gateway CPU/req | CPU/req vs Anthropic "
        "| n |",
        "|" + "---|" * 9,
    ]
    for r in reports:
        anthropic = same_shape(r, all_reports)
        extra = (
            f"{r.gateway_cpu_us_per_request - anthropic.gateway_cpu_us_per_request:+,.0f} µs"
            if anthropic
            else "n/a"
        )
        rows.append(
            f"| {r.provider}: {_cell_name(r)} "
            f"| {r.direct_p50_ms:.2f} / {r.direct_p99_ms:.2f} ms "
            f"| {r.gateway_p50_ms:.2f} / {r.gateway_p99_ms:.2f} ms "
            f"| **{r.added_p50_ms:.2f} / {r.added_p99_ms:.2f} ms** "
            f"| {r.ttfb_added_p50_ms:.2f} / {r.ttfb_added_p99_ms:.2f} ms "
            f"| **{r.gateway_rps:,.0f}** | {r.gateway_cpu_us_per_request:,.0f} µs | {extra} "
            f"| {r.gateway_n:,} |"
        )
    return "\n".join(rows)


def verdict(reports: list[CellReport]) -> list[str]:
    lines = []
    for r in reports:
        if r.provider != ANTHROPIC:
            continue
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
                f"core would serve {r.cpu_bound_rps:,.0f}; the floor served "
                f"{_number(r.floor_rps)})"
            )
    return lines


def ledger_check(
    ledger: dict[str, Any], sent: dict[str, int], names: dict[str, str]
) -> tuple[bool, list[str]]:
    """Whether the ledger holds exactly one 200 row per request sent, in all and for each
    provider, and the lines that say so."""
    total = sum(sent.values())
    complete = ledger["rows"] == total and set(ledger["by_status"]) <= {"200"}
    lines = [
        f"usage ledger: {ledger['rows']:,} rows for {total:,} requests sent through the "
        f"gateway ({ledger['streamed']:,} streamed), statuses {ledger['by_status']}, "
        f"metered ${ledger['cost_micros'] / 1e6:,.2f} -> {'OK' if complete else 'MISMATCH'}"
    ]
    by_provider = ledger.get("by_provider", {})
    for provider, count in sent.items():
        name = names.get(provider, "")
        rows = by_provider.get(name, {"rows": 0, "by_status": {}, "streamed": 0, "cost_micros": 0})
        ok = rows["rows"] == count and set(rows["by_status"]) <= {"200"}
        complete = complete and ok
        lines.append(
            f"  {provider} ({name}): {rows['rows']:,} rows for {count:,} requests "
            f"({rows['streamed']:,} streamed), statuses {rows['by_status']}, metered "
            f"${rows['cost_micros'] / 1e6:,.2f} -> {'OK' if ok else 'MISMATCH'}"
        )
    return complete, lines


# --- main ------------------------------------------------------------------------------------


def cells_for(args: argparse.Namespace) -> list[Cell]:
    cells = []
    for provider in routes.PROVIDERS:
        if provider not in args.providers:
            continue
        levels = args.concurrency if provider == ANTHROPIC else args.provider_concurrency
        cells += [
            Cell(body, mode, concurrency, provider)
            for body in args.bodies
            for mode in args.modes
            for concurrency in levels
        ]
    return cells


def progress(cell: Cell, report: CellReport) -> str:
    line = (
        f"  {cell.label:<24} added p50 {report.added_p50_ms:6.2f} ms  "
        f"p99 {report.added_p99_ms:6.2f} ms  gateway {report.gateway_rps:6,.0f} req/s"
    )
    if report.floor_added_p50_ms is None:
        return f"{line}  (gateway CPU {report.gateway_cpu_us_per_request:,.0f} µs/req)"
    return (
        f"{line}  (floor: added p50 {report.floor_added_p50_ms:5.2f} ms, "
        f"{_number(report.floor_rps):>6} req/s)"
    )


async def benchmark(
    args: argparse.Namespace, endpoints: Endpoints, pids: dict[str, int]
) -> tuple[list[CellReport], dict[str, int], int]:
    """Every cell; returns the reports, the gateway requests sent, by provider, and the
    floor's requests after the smoke test."""
    cells = cells_for(args)
    providers = list(dict.fromkeys(c.provider for c in cells))
    sent = await smoke_test(endpoints, providers)
    floor_sent = await warm_up(endpoints, cells, args.warmup, sent)
    reports = []
    for cell in cells:
        report, n = await measure(cell, endpoints, pids, args.duration)
        sent[cell.provider] += n
        floor_sent += report.floor_n
        reports.append(report)
        print(progress(cell, report), flush=True)
    return reports, sent, floor_sent


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="short cells (~40 s for the anthropic cells)"
    )
    parser.add_argument("--duration", type=float, help="seconds per measurement")
    parser.add_argument("--warmup", type=float, help="seconds of warm-up traffic per provider")
    parser.add_argument(
        "--providers",
        nargs="+",
        choices=routes.PROVIDERS,
        default=[ANTHROPIC],
        help="whose cells to measure: anthropic (the hot path), openai (Anthropic client -> "
        "OpenAI-compatible upstream, translated), bedrock (SigV4, event stream)",
    )
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 10, 50])
    parser.add_argument(
        "--provider-concurrency",
        type=int,
        nargs="+",
        default=[1, 10],
        help="concurrency of the openai and bedrock cells",
    )
    parser.add_argument(
        "--bodies", nargs="+", choices=["small", "large"], default=["small", "large"]
    )
    parser.add_argument("--modes", nargs="+", choices=["json", "sse"], default=["json", "sse"])
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to cores")
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs, database)")
    parser.add_argument(
        "--wrapper",
        default="",
        help="run the gateway and the floor under this command, {name} standing for "
        "'gateway' or 'floor' (benchmarks/instructions.py: valgrind); they get 15 minutes to "
        "start and to stop",
    )
    parser.add_argument(
        "--idle-before",
        type=float,
        default=0.0,
        help="seconds the started gateway and floor wait idle before the first request",
    )
    args = parser.parse_args()
    if args.duration is None:
        args.duration = 0.6 if args.quick else 4.0
    if args.warmup is None:
        args.warmup = 2.0 if args.quick else 6.0
    return args


def report(
    info: dict[str, Any],
    reports: list[CellReport],
    ledger: dict[str, Any],
    sent: dict[str, int],
    names: dict[str, str],
) -> bool:
    """Print the results; True when the ledger holds exactly the requests sent."""
    anthropic = [r for r in reports if r.provider == ANTHROPIC]
    others = [r for r in reports if r.provider != ANTHROPIC]
    if anthropic:
        print()
        print(table(anthropic))
        print()
        print(cost_table(anthropic))
    if others:
        print()
        print(provider_table(others, reports))
    print()
    for provider in sent:
        print(f"{provider}: {REFERENCES[provider]}")
    for line in verdict(reports):
        print(line)
    complete, lines = ledger_check(ledger, sent, names)
    for line in lines:
        print(line)
    print(
        f"load average (1 min) at start {info['loadavg_start'][0]:.2f}, at end "
        f"{info['loadavg_end'][0]:.2f}; on {info['cores']} cores anything much above 1.5 means "
        "other processes competed for the cores"
    )
    return complete


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds through the `finally`s that stop the processes


def start_fake(
    stack: contextlib.ExitStack, provider: str, env: dict[str, str], workdir: Path, pin: bool
) -> int:
    """Start a provider's fake upstream on core 1; returns its port."""
    script, name = FAKES[provider]
    port = free_port()
    process = stack.enter_context(
        started(
            pinned([sys.executable, str(HERE / script), "--port", str(port)], CLIENT_CORE, pin),
            env,
            workdir / f"{provider}-upstream.log",
        )
    )
    wait_for_port(port, process)
    print(f"{name} on port {port}", flush=True)
    return port


def seed_arguments(workdir: Path, ports: dict[str, int]) -> list[str]:
    arguments = [
        "seed",
        "--upstream",
        f"http://{HOST}:{ports[ANTHROPIC]}",
        "--secret-file",
        str(workdir / "key.secret"),
    ]
    if "openai" in ports:
        arguments += ["--openai-upstream", f"http://{HOST}:{ports['openai']}/v1"]
    if "bedrock" in ports:
        arguments += ["--bedrock-upstream", f"http://{HOST}:{ports['bedrock']}"]
    return arguments


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
        providers=args.providers,
    )
    print(
        f"machine: {info['cpu']}, {info['cores']} cores, Python {info['python']}, "
        f"load {info['loadavg_start'][0]:.2f}; uvicorn {info['uvicorn_loop']}+"
        f"{info['uvicorn_http']}; database {info['database']}, counters {info['counters']}; "
        f"pinned: {pin}; providers: {' '.join(args.providers)}",
        flush=True,
    )
    gateway_port, floor_port = free_port(), free_port()
    try:
        manage(env, "migrate", "--noinput")
        with contextlib.ExitStack() as stack:
            # The Anthropic fake always runs: the floor and the `claude-*` route point at it.
            ports = {
                provider: start_fake(stack, provider, env, workdir, pin)
                for provider in routes.PROVIDERS
                if provider == ANTHROPIC or provider in args.providers
            }
            env["BENCH_UPSTREAM"] = f"http://{HOST}:{ports[ANTHROPIC]}"
            ids = seed_script(env, *seed_arguments(workdir, ports))
            # Under a wrapper such as valgrind both start and stop many times slower.
            patience = 900.0 if args.wrapper else 30.0
            floor = stack.enter_context(
                started(
                    pinned(
                        server_command(
                            "bare_proxy:app",
                            floor_port,
                            "--app-dir",
                            str(HERE),
                            wrapper=wrapped(args.wrapper, "floor"),
                        ),
                        GATEWAY_CORE,
                        pin,
                    ),
                    env,
                    workdir / "floor.log",
                    stop_timeout=patience,
                )
            )
            gateway = stack.enter_context(
                started(
                    pinned(
                        server_command(
                            "gatewaysite.asgi:application",
                            gateway_port,
                            wrapper=wrapped(args.wrapper, "gateway"),
                        ),
                        GATEWAY_CORE,
                        pin,
                    ),
                    env,
                    workdir / "gateway.log",
                    stop_timeout=patience,
                )
            )
            wait_for_port(floor_port, floor, patience)
            wait_for_port(gateway_port, gateway, patience)
            time.sleep(args.idle_before)
            if pin:
                os.sched_setaffinity(0, {CLIENT_CORE})
            secret = (workdir / "key.secret").read_text().strip()
            fake_ports = {p: port for p, port in ports.items() if p != ANTHROPIC}
            endpoints = Endpoints(ports[ANTHROPIC], gateway_port, floor_port, secret, fake_ports)
            print(f"gateway pid {gateway.pid}, floor pid {floor.pid}; measuring", flush=True)
            pids = {"gateway": gateway.pid, "floor": floor.pid}
            reports, sent, floor_sent = asyncio.run(benchmark(args, endpoints, pids))
            stop(gateway, patience)  # its shutdown flushes the pending usage events to the ledger
            ledger = seed_script(env, "ledger", "--key-id", str(ids["key_id"]))
        info["loadavg_end"] = os.getloadavg()
        complete = report(info, reports, ledger, sent, ids["providers"])
        if args.json:
            results = {
                "machine": info,
                "args": {k: str(v) for k, v in vars(args).items()},
                "references": {p: REFERENCES[p] for p in sent},
                "cells": [asdict(r) for r in reports],
                "ledger": ledger,
                "sent": sent,
                "floor_sent": floor_sent,
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
