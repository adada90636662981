"""Compare this checkout's governed hot path with another checkout's, paired, in one run.

    git worktree add /tmp/base <commit>          # the tree to compare with
    python benchmarks/compare.py --baseline /tmp/base [--rounds 16] [--burst 3] [--concurrency 10]

Why a separate harness: on a shared VM the machine's speed drifts by 10 % and more between runs a
few minutes apart (two copies of the same tree measured 10 % apart in medians of four run.py
runs each on 2026-12-06), which is more than the differences worth finding between two trees.
Here both trees' gateways run at once, pinned to the same core, and short bursts of the same
load alternate between them (base-new, new-base, ...), so every round measures both under the
same conditions. Each round also sends a burst straight to the fake upstream, the reference
for added latency. The report gives each tree's median CPU per request, requests per second and
added p50, and the median and range of the per-round ratios new / base.

Both gateways run on this checkout's interpreter and packages, each with its own SQLite
database seeded by this checkout's seed.py against that tree's models (in-memory counters, or
REDIS_URL's Redis under separate prefixes). The JSON small-body Anthropic cell only: the
governed path without translation.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import loadgen
from processes import (
    HOST,
    ROOT,
    bench_env,
    cpu_seconds,
    free_port,
    manage,
    pinned,
    seed_script,
    server_command,
    started,
    wait_for_port,
)
from run import ANTHROPIC, CLIENT_CORE, GATEWAY_CORE, Cell, Endpoints, seed_arguments, start_fake

TREES = ("base", "new")


@dataclass
class Burst:
    cpu_us_per_request: float
    requests_per_second: float
    p50_ms: float
    errors: int


@dataclass
class Tree:
    name: str
    root: Path
    port: int = 0
    pid: int = 0
    secret: str = ""
    bursts: list[Burst] = field(default_factory=list)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", type=Path, required=True, help="checkout to compare with")
    parser.add_argument("--rounds", type=int, default=16, help="bursts per tree (default 16)")
    parser.add_argument("--burst", type=float, default=3.0, help="seconds per burst (default 3)")
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds per tree")
    parser.add_argument(
        "--processes",
        type=int,
        default=4,
        help="pairs of gateway processes started one after the other, sharing the rounds",
    )
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to cores")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs, databases)")
    args = parser.parse_args()
    if not (args.baseline / "gatewaysite" / "asgi.py").is_file():
        parser.error(f"{args.baseline} is not a checkout of the gateway (no gatewaysite/asgi.py)")
    if not 1 <= args.rounds <= 200 or not 0.5 <= args.burst <= 60:
        parser.error("--rounds must be 1-200 and --burst 0.5-60 seconds")
    if not 1 <= args.processes <= args.rounds:
        parser.error("--processes must be 1 to --rounds")
    return args


def tree_env(tree: Tree, workdir: Path, upstream_port: int) -> dict[str, str]:
    env = bench_env(workdir)
    env["DATABASE_URL"] = f"sqlite:///{workdir / 'bench.sqlite3'}"  # never one shared database
    env["GATEWAY_COUNTER_PREFIX"] = f"gwcompare{os.getpid()}{tree.name}:c"
    env["GATEWAY_CACHE_PREFIX"] = f"gwcompare{os.getpid()}{tree.name}"
    env["BENCH_UPSTREAM"] = f"http://{HOST}:{upstream_port}"
    return env


async def burst(tree: Tree, request: bytes, args: argparse.Namespace, direct_p50: float) -> Burst:
    cpu_before = cpu_seconds(tree.pid)
    result = await loadgen.run(
        host=HOST,
        port=tree.port,
        request=request,
        concurrency=args.concurrency,
        duration=args.burst,
    )
    cpu = cpu_seconds(tree.pid) - cpu_before
    latencies = [s.latency for s in result.ok]
    if result.first_error:
        print(f"  {tree.name}: {result.errors} errors, first: {result.first_error}", flush=True)
    return Burst(
        cpu_us_per_request=cpu / len(result.samples) * 1e6 if result.samples else 0.0,
        requests_per_second=result.requests_per_second,
        p50_ms=(loadgen.percentile(latencies, 0.5) - direct_p50) * 1000 if latencies else 0.0,
        errors=result.errors,
    )


async def alternate(
    trees: list[Tree], upstream_port: int, args: argparse.Namespace, rounds: int
) -> None:
    cell = Cell(body="small", mode="json", concurrency=args.concurrency)
    requests = {}
    for tree in trees:
        endpoints = Endpoints(upstream_port, tree.port, tree.port, tree.secret)
        requests[tree.name] = endpoints.request(cell, "gateway")
        warm = await loadgen.run(
            host=HOST,
            port=tree.port,
            request=requests[tree.name],
            concurrency=args.concurrency,
            duration=args.warmup,
        )
        if not warm.ok:
            raise SystemExit(f"{tree.name}: no request succeeded in warm-up: {warm.first_error}")
    direct_request = Endpoints(upstream_port, 0, 0, "").request(cell, "direct")
    for _ in range(rounds):
        index = len(trees[0].bursts)
        direct = await loadgen.run(
            host=HOST,
            port=upstream_port,
            request=direct_request,
            concurrency=args.concurrency,
            duration=min(args.burst, 1.0),
        )
        direct_p50 = loadgen.percentile([s.latency for s in direct.ok], 0.5)
        order = trees if index % 2 == 0 else trees[::-1]
        for tree in order:
            tree.bursts.append(await burst(tree, requests[tree.name], args, direct_p50))
        base, new = (t.bursts[-1] for t in trees)
        print(
            f"round {index + 1:>3}/{args.rounds}: CPU per request base "
            f"{base.cpu_us_per_request:6.1f} us, new {new.cpu_us_per_request:6.1f} us "
            f"(new/base {new.cpu_us_per_request / base.cpu_us_per_request:.3f}); req/s "
            f"{base.requests_per_second:,.0f} / {new.requests_per_second:,.0f}",
            flush=True,
        )


def report(trees: list[Tree], args: argparse.Namespace) -> int:
    """Print the comparison; returns the number of failed requests."""
    base, new = trees
    print()
    print(
        f"{args.rounds} rounds of {args.burst:g} s per tree over {args.processes} pairs of "
        f"processes, JSON small body, "
        f"c={args.concurrency}; base = {base.root}, new = {new.root}"
    )
    print("| | base | new | new / base, median of rounds (range) |")
    print("|---|---|---|---|")
    for label, metric in (
        ("gateway CPU per request (us)", "cpu_us_per_request"),
        ("requests per second", "requests_per_second"),
        ("added p50 (ms)", "p50_ms"),
    ):
        a = [getattr(b, metric) for b in base.bursts]
        b = [getattr(b, metric) for b in new.bursts]
        ratios = [y / x for x, y in zip(a, b, strict=True) if x > 0]
        print(
            f"| {label} | {statistics.median(a):,.2f} | {statistics.median(b):,.2f} | "
            f"{statistics.median(ratios):.3f} ({min(ratios):.3f}-{max(ratios):.3f}) |"
        )
    cheaper = sum(
        y.cpu_us_per_request < x.cpu_us_per_request
        for x, y in zip(base.bursts, new.bursts, strict=True)
    )
    errors = sum(b.errors for t in trees for b in t.bursts)
    print(f"new used less CPU per request than base in {cheaper} of {args.rounds} rounds")
    print(f"errors: {errors}")
    return errors


def start_gateways(
    stack: contextlib.ExitStack, trees: list[Tree], envs: dict[str, dict[str, str]], pin: bool
) -> None:
    for tree in trees:
        workdir = Path(envs[tree.name]["GATEWAY_SPOOL_DIR"]).parent
        tree.port = free_port()
        command = server_command("gatewaysite.asgi:application", tree.port)
        process = stack.enter_context(
            started(
                pinned(command, GATEWAY_CORE, pin),
                envs[tree.name],
                workdir / f"gateway-{tree.port}.log",
                cwd=tree.root,
            )
        )
        wait_for_port(tree.port, process)
        tree.pid = process.pid


def main() -> int:
    args = parse_args()
    pin = not args.no_pin and (os.cpu_count() or 1) >= 2 and hasattr(os, "sched_setaffinity")
    trees = [Tree("base", args.baseline.resolve()), Tree("new", ROOT)]
    top = Path(tempfile.mkdtemp(prefix="gw-compare-"))
    print(f"logs and databases in {top} (removed at the end unless --keep)", flush=True)
    with contextlib.ExitStack() as stack:
        upstream_port = start_fake(stack, ANTHROPIC, bench_env(top), top, pin)
        envs = {}
        for tree in trees:
            workdir = top / tree.name
            workdir.mkdir()
            envs[tree.name] = env = tree_env(tree, workdir, upstream_port)
            manage(env, "migrate", "--noinput", tree=tree.root)
            seed_script(env, *seed_arguments(workdir, {ANTHROPIC: upstream_port}), tree=tree.root)
            tree.secret = (workdir / "key.secret").read_text().strip()
        if pin:
            os.sched_setaffinity(0, {CLIENT_CORE})
        # A process's speed depends on its own start (address layout, string hashing): the
        # same tree measured 350 and 410 us per request in two processes. Several pairs of
        # processes, each measured for an equal share of the rounds, average that out.
        for index in range(args.processes):
            rounds = args.rounds // args.processes + (index < args.rounds % args.processes)
            print(f"process pair {index + 1}/{args.processes}: {rounds} rounds", flush=True)
            with contextlib.ExitStack() as servers:
                start_gateways(servers, trees, envs, pin)
                time.sleep(1.0)
                asyncio.run(alternate(trees, upstream_port, args, rounds))
    errors = report(trees, args)
    if args.keep or errors:
        print(f"kept {top}")
    else:
        shutil.rmtree(top, ignore_errors=True)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
