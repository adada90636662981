"""Seed (and inspect) the benchmark's governance data, through the governance services.

Run by benchmarks/run.py in a subprocess with the benchmark's DATABASE_URL in the environment:

    python benchmarks/seed.py seed --upstream http://127.0.0.1:PORT --secret-file PATH \
        [--openai-upstream http://127.0.0.1:PORT/v1] [--bedrock-upstream http://127.0.0.1:PORT]
    python benchmarks/seed.py ledger --key-id ID

`seed` creates an organization, a team, a key with a rate limit far above what the benchmark
sends (so limits are checked on every request but never refuse), org and team budgets far
above what it spends, a provider of kind "anthropic" pointing at the fake upstream and the
route "claude-*". With --openai-upstream, also a provider of kind "openai-compatible" and the
route "claude-haiku-*" to its model llama-3.3-70b-versatile (priced here, as an admin would);
with --bedrock-upstream, a provider of kind "bedrock" (region us-east-1, static test keys, so
every request is SigV4-signed) and the route "claude-sonnet-*" to
us.anthropic.claude-sonnet-4-6-v1:0. It writes the key's secret to --secret-file (mode 0600)
and prints the ids and provider names as JSON. `ledger` prints the usage ledger's rows for the
key as JSON, in all and by provider.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

# The checkout whose models are seeded: this one, or another given by benchmarks/compare.py.
ROOT = Path(os.environ.get("BENCH_TREE") or Path(__file__).resolve().parent.parent)
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gatewaysite.settings")

import django  # noqa: E402

django.setup()

from bench_routes import (  # noqa: E402
    ANTHROPIC_ROUTE,
    BEDROCK_CREDENTIALS,
    BEDROCK_MODEL,
    BEDROCK_REGION,
    BEDROCK_ROUTE,
    OPENAI_API_KEY,
    OPENAI_MAX_OUTPUT_TOKENS,
    OPENAI_MODEL,
    OPENAI_PRICE,
    OPENAI_ROUTE,
)
from django.db.models import Count, QuerySet, Sum  # noqa: E402

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
BENCH_PREFIX = "bench-"
HUGE_BUDGET_MICROS = 10_000_000 * 1_000_000  # $10M: admission runs, never refuses
# A token counts whether cached or not: at the fake's 1,790 tokens a request, a calendar minute
# of 5,000 req/s takes 537M of the 2e9 (the column's ceiling on PostgreSQL is 2^31 - 1).
RATE_LIMIT = {
    "requests_per_minute": 1_000_000,
    "tokens_per_minute": 2_000_000_000,
    "concurrent": 10_000,
}


def _route_for(provider: Provider, name: str, upstream_model: str = "") -> None:
    """Route `name` to the provider, replacing earlier benchmark runs' deployments."""
    route = ModelRoute.objects.filter(public_name=name).first()
    if route is None:
        route = ModelRoute(public_name=name, description="benchmark")
        common.save_instance(route, actor=ACTOR)
    for deployment in route.deployments.select_related("provider"):
        if not deployment.provider.name.startswith(BENCH_PREFIX):
            sys.exit(
                f'route "{name}" already serves provider "{deployment.provider.name}": '
                "run the benchmark on an empty database"
            )
        common.delete_instance(deployment, actor=ACTOR)
    deployment = Deployment(route=route, provider=provider, upstream_model=upstream_model)
    common.save_instance(deployment, actor=ACTOR)


def _openai_provider(run: str, base_url: str) -> str:
    if not ModelPrice.objects.filter(model_pattern=OPENAI_MODEL).exists():
        prices.load_price_document(
            document={"effective_from": "2025-01-01T00:00:00Z", "prices": [OPENAI_PRICE]},
            actor=ACTOR,
            source="benchmark",
        )
    provider = Provider(
        name=f"{run}-openai",
        kind=Provider.Kind.OPENAI_COMPATIBLE,
        base_url=base_url,
        settings={"max_output_tokens": OPENAI_MAX_OUTPUT_TOKENS},
    )
    common.save_instance(provider, actor=ACTOR)
    providers.set_credentials(
        actor=ACTOR, provider=provider, credentials={"api_key": OPENAI_API_KEY}
    )
    _route_for(provider, OPENAI_ROUTE, OPENAI_MODEL)
    return provider.name


def _bedrock_provider(run: str, base_url: str) -> str:
    provider = Provider(
        name=f"{run}-bedrock",
        kind=Provider.Kind.BEDROCK,
        base_url=base_url,
        region=BEDROCK_REGION,
    )
    common.save_instance(provider, actor=ACTOR)
    providers.set_credentials(actor=ACTOR, provider=provider, credentials=BEDROCK_CREDENTIALS)
    _route_for(provider, BEDROCK_ROUTE, BEDROCK_MODEL)
    return provider.name


def _retire_earlier_runs() -> None:
    """Disable the providers of earlier runs on this database. Their fakes are gone, and their
    credentials were encrypted under the secret key that run generated: the gateway cannot
    decrypt them, and would refuse to load the routing table (every request a 503)."""
    for provider in Provider.objects.filter(name__startswith=BENCH_PREFIX, enabled=True):
        provider.enabled = False
        common.save_instance(provider, actor=ACTOR)


def seed(
    upstream: str, secret_file: Path, openai_upstream: str = "", bedrock_upstream: str = ""
) -> dict[str, Any]:
    _retire_earlier_runs()
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
    _route_for(provider, ANTHROPIC_ROUTE)
    names = {"anthropic": provider.name}
    if openai_upstream:
        names["openai"] = _openai_provider(run, openai_upstream)
    if bedrock_upstream:
        names["bedrock"] = _bedrock_provider(run, bedrock_upstream)
    issued = keys.create_key(actor=ACTOR, organization=org, team=team, name="bench-key")
    common.save_instance(RateLimit(virtual_key=issued.key, **RATE_LIMIT), actor=ACTOR)
    secret_file.touch(mode=0o600)
    secret_file.write_text(issued.secret)
    return {
        "organization_id": org.pk,
        "team_id": team.pk,
        "key_id": issued.key.pk,
        "providers": names,
    }


def _summary(rows: QuerySet[UsageRecord]) -> dict[str, Any]:
    by_status = dict(rows.values_list("status").annotate(n=Count("id")).order_by("status"))
    totals = rows.aggregate(n=Count("id"), cost=Sum("cost_micros"))
    return {
        "rows": totals["n"],
        "cost_micros": totals["cost"] or 0,
        "by_status": {str(k): v for k, v in by_status.items()},
        "streamed": rows.filter(stream=True).count(),
    }


def ledger(key_id: int) -> dict[str, Any]:
    rows = UsageRecord.objects.filter(key_id=key_id)
    names = rows.values_list("provider", flat=True).distinct().order_by("provider")
    by_provider = {name: _summary(rows.filter(provider=name)) for name in names}
    return {**_summary(rows), "by_provider": by_provider}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    seed_cmd = commands.add_parser("seed")
    seed_cmd.add_argument("--upstream", required=True)
    seed_cmd.add_argument("--secret-file", required=True, type=Path)
    seed_cmd.add_argument("--openai-upstream", default="", help="base URL, /v1 included")
    seed_cmd.add_argument("--bedrock-upstream", default="")
    ledger_cmd = commands.add_parser("ledger")
    ledger_cmd.add_argument("--key-id", required=True, type=int)
    args = parser.parse_args()
    if args.command == "seed":
        seeded = seed(args.upstream, args.secret_file, args.openai_upstream, args.bedrock_upstream)
        print(json.dumps(seeded))
    else:
        print(json.dumps(ledger(args.key_id)))


if __name__ == "__main__":
    main()
