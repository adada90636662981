"""Instructions the gateway executes per request, counted by Valgrind, next to the floor's.

    python benchmarks/instructions.py       # about 4 minutes; needs valgrind (Debian package)

Why: CPU time per request, the figure run.py reports, moves by +-30 % from one run to the next
on a shared 2-vCPU virtual machine (benchmarks/README.md), so two trees a few percent apart
cannot be told apart without many alternating runs. An instruction count barely moves.

How: two runs of run.py on one cell (JSON, small body, c=10), each with the gateway and the
bare pass-through floor under `valgrind --tool=cachegrind --cache-sim=no` (an instruction
counter, ~50x slower than the real thing). Both processes live equally long in both runs:
run A has LONG seconds of traffic, run B SHORT seconds after LONG - SHORT seconds idle. Start,
shutdown and the work the clock drives (scheduler, writer wake-ups) are the same in both, so
(instructions A - instructions B) / (requests A - requests B) is what one more request costs.
The gateway's requests are its ledger rows; the floor's, the requests the load generator sent
it. Under Valgrind the gateway serves ~100 requests a second instead of ~2,000, so work done
per ledger batch (four a second) weighs about 20 times more per request than at full speed.
Instructions are not time: cache misses and system calls cost more than their count says.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
VALGRIND = "valgrind --tool=cachegrind --cache-sim=no --cachegrind-out-file=/dev/null"
TOTAL = re.compile(r"I\s+refs:\s+([\d,]+)")


@dataclass(frozen=True)
class Run:
    gateway_requests: int
    floor_requests: int
    gateway_instructions: int
    floor_instructions: int


def instructions(log: Path) -> int:
    """The total Valgrind printed when the process ended."""
    found = TOTAL.search(log.read_text(errors="replace"))
    if found is None:
        raise RuntimeError(f"no instruction total in {log}: did the process end cleanly?")
    return int(found.group(1).replace(",", ""))


def run(workdir: Path, label: str, traffic: float, idle: float, warmup: float) -> Run:
    logs = workdir / label
    logs.mkdir()
    results = logs / "results.json"
    wrapper = f"{VALGRIND} --log-file={logs}/{{name}}.valgrind"
    command = [
        sys.executable,
        str(HERE / "run.py"),
        "--providers",
        "anthropic",
        "--bodies",
        "small",
        "--modes",
        "json",
        "--concurrency",
        "10",
        "--duration",
        str(traffic),
        "--warmup",
        str(warmup),
        "--idle-before",
        str(idle),
        "--wrapper",
        wrapper,
        "--json",
        str(results),
    ]
    print(f"run {label}: {traffic:g} s of traffic after {idle:g} s idle ...", flush=True)
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode or not results.exists():
        raise RuntimeError(f"run.py failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    data = json.loads(results.read_text())
    return Run(
        gateway_requests=int(data["ledger"]["rows"]),
        floor_requests=int(data["floor_sent"]),
        gateway_instructions=instructions(logs / "gateway.valgrind"),
        floor_instructions=instructions(logs / "floor.valgrind"),
    )


def per_request(instructions_a: int, instructions_b: int, requests_a: int, requests_b: int) -> int:
    if requests_a <= requests_b:
        raise RuntimeError(f"the long run served {requests_a} requests, the short {requests_b}")
    return round((instructions_a - instructions_b) / (requests_a - requests_b))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--long", type=float, default=40.0, help="seconds of traffic, run A")
    parser.add_argument("--short", type=float, default=10.0, help="seconds of traffic, run B")
    parser.add_argument("--warmup", type=float, default=2.0)
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        print("valgrind is not installed (Debian: apt-get install valgrind)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="gw-instructions-") as tmp:
        workdir = Path(tmp)
        a = run(workdir, "a", args.long, 0.0, args.warmup)
        b = run(workdir, "b", args.short, args.long - args.short, args.warmup)
    gateway = per_request(
        a.gateway_instructions, b.gateway_instructions, a.gateway_requests, b.gateway_requests
    )
    floor = per_request(
        a.floor_instructions, b.floor_instructions, a.floor_requests, b.floor_requests
    )
    for name, r in (("A", a), ("B", b)):
        print(
            f"run {name}: gateway {r.gateway_requests:,} requests, "
            f"{r.gateway_instructions:,} instructions; floor {r.floor_requests:,} requests, "
            f"{r.floor_instructions:,} instructions"
        )
    print(f"gateway: {gateway:,} instructions per request (JSON, small body, c=10)")
    print(f"floor:   {floor:,} instructions per request (bare pass-through, same run)")
    print(f"gateway / floor: {gateway / floor:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
