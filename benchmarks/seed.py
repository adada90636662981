"""Seed (and inspect) the benchmark's governance data, through the governance services.

Run by benchmarks/run.py in a subprocess with the benchmark's DATABASE_URL in the environment:

    python benchmarks/seed.py seed --upstream http://127.0.0.1:PORT --secret-file PATH
    python benchmarks/seed.py ledger --key-id ID

`seed` creates an organization, a team, a key with a rate limit far above what the benchmark
sends (so limits are checked on every request but never refuse), org and team budgets far
above what it spends, a provider of kind "anthropic" pointing at the fake upstream and the
route "claude-*". It writes the key's secret to --secret-file (mode 0600) and prints the ids as
JSON. `ledger` prints the usage ledger's rows for the key as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gatewaysite.settings")

import django  # noqa: E402

django.setup()

from django.db.models import Count, Sum  # noqa: E402

from governance.actors import Actor  # noqa: E402
from governance.models import (  # noqa: E402
    Budget,
    Deployment,
    ModelPrice,
    ModelRoute,
    Organization,
    Provider,
    RateLimit,
    Team,
)
from governance.services import common, keys, prices, providers  # noqa: E402
from telemetry.models import UsageRecord  # noqa: E402

ACTOR = Actor.system("benchmark")
ROUTE = "claude-*"
BENCH_PREFIX = "bench-"
HUGE_BUDGET_MICROS = 10_000_000 * 1_000_000  # $10M: admission runs, never refuses
RATE_LIMIT = {
    "requests_per_minute": 1_000_000,
    "tokens_per_minute": 2_000_000_000,
    "concurrent": 10_000,
}


def _route_for(provider: Provider) -> None:
    """Route claude-* to the fake upstream, replacing earlier benchmark runs' deployments."""
    route = ModelRoute.objects.filter(public_name=ROUTE).first()
    if route is None:
        route = ModelRoute(public_name=ROUTE, description="benchmark")
        common.save_instance(route, actor=ACTOR)
    for deployment in route.deployments.select_related("provider"):
        if not deployment.provider.name.startswith(BENCH_PREFIX):
            sys.exit(
                f'route "{ROUTE}" already serves provider "{deployment.provider.name}": '
                "run the benchmark on an empty database"
            )
        common.delete_instance(deployment, actor=ACTOR)
    common.save_instance(Deployment(route=route, provider=provider), actor=ACTOR)


def seed(upstream: str, secret_file: Path) -> dict[str, Any]:
    if not ModelPrice.objects.exists():
        prices.load_price_file(path=prices.DEFAULT_PRICE_FILE, actor=ACTOR)
    run = f"{BENCH_PREFIX}{int(time.time())}-{os.getpid()}"
    org = Organization(name=run)
    common.save_instance(org, actor=ACTOR)
    team = Team(organization=org, name="bench-team")
    common.save_instance(team, actor=ACTOR)
    for budget in (
        Budget(organization=org, amount_micros=HUGE_BUDGET_MICROS),
        Budget(organization=org, team=team, amount_micros=HUGE_BUDGET_MICROS),
    ):
        common.save_instance(budget, actor=ACTOR)
    provider = Provider(name=run, kind=Provider.Kind.ANTHROPIC, base_url=upstream)
    common.save_instance(provider, actor=ACTOR)
    providers.set_credentials(
        actor=ACTOR, provider=provider, credentials={"api_key": "bench-upstream-key-not-secret"}
    )
    _route_for(provider)
    issued = keys.create_key(actor=ACTOR, organization=org, team=team, name="bench-key")
    common.save_instance(RateLimit(virtual_key=issued.key, **RATE_LIMIT), actor=ACTOR)
    secret_file.touch(mode=0o600)
    secret_file.write_text(issued.secret)
    return {"organization_id": org.pk, "team_id": team.pk, "key_id": issued.key.pk}


def ledger(key_id: int) -> dict[str, Any]:
    rows = UsageRecord.objects.filter(key_id=key_id)
    by_status = dict(rows.values_list("status").annotate(n=Count("id")).order_by("status"))
    totals = rows.aggregate(n=Count("id"), cost=Sum("cost_micros"))
    return {
        "rows": totals["n"],
        "cost_micros": totals["cost"] or 0,
        "by_status": {str(k): v for k, v in by_status.items()},
        "streamed": rows.filter(stream=True).count(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    seed_cmd = commands.add_parser("seed")
    seed_cmd.add_argument("--upstream", required=True)
    seed_cmd.add_argument("--secret-file", required=True, type=Path)
    ledger_cmd = commands.add_parser("ledger")
    ledger_cmd.add_argument("--key-id", required=True, type=int)
    args = parser.parse_args()
    if args.command == "seed":
        print(json.dumps(seed(args.upstream, args.secret_file)))
    else:
        print(json.dumps(ledger(args.key_id)))


if __name__ == "__main__":
    main()
