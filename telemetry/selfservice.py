"""A developer's own view, authenticated by their virtual key: the key's budgets and every
ceiling above it (spent, remaining, reset, forecast), its rate limits and models, and its own
recent usage by day, model and Claude Code session.

Nothing here names another key: usage and sessions are the key's own, and a ceiling above it
(team, project, organization) shows only its pooled total, which is what the key is held to.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.utils import timezone

from governance import policy as policy_module
from governance import selectors
from governance.keyhash import SECRET_PREFIX, hash_secret
from governance.models import Budget
from governance.policy import KeyPolicy
from telemetry import reports, rollups
from telemetry.dashboards import utilisation

USAGE_DAYS = 30
TOP_SESSIONS = 20
STATUSLINE_SECONDS = 10  # Claude Code asks at every message; the figure may be this old
FAILURE_WINDOW_SECONDS = 60


# --- the key -------------------------------------------------------------------------------------


def presented_secret(headers: Mapping[str, str]) -> str:
    """The key from `x-api-key` or `Authorization: Bearer`, with the proxy's precedence: the
    Bearer value wins only when it alone looks like a gateway key (Claude Code may send a stale
    provider key in x-api-key beside the gateway key)."""
    api_key = headers.get("x-api-key", "").strip()
    authorization = headers.get("authorization", "")
    bearer = authorization[7:].strip() if authorization[:7].lower() == "bearer " else ""
    if bearer.startswith(SECRET_PREFIX) and not api_key.startswith(SECRET_PREFIX):
        return bearer
    return api_key or bearer


def _failure_key(address: str) -> str:
    minute = int(timezone.now().timestamp()) // FAILURE_WINDOW_SECONDS
    return f"selfservice:authfail:{address}:{minute}"


def throttled(address: str) -> bool:
    """Too many failed key checks from this address in the current minute."""
    failures = cache.get(_failure_key(address)) or 0
    return bool(int(failures) >= settings.GATEWAY_AUTH_FAILURES_PER_MINUTE)


def _record_failure(address: str) -> None:
    key = _failure_key(address)
    if not cache.add(key, 1, FAILURE_WINDOW_SECONDS * 2):
        try:
            cache.incr(key)
        except ValueError:  # expired in between
            cache.add(key, 1, FAILURE_WINDOW_SECONDS * 2)


def key_policy(secret: str, *, address: str) -> KeyPolicy | None:
    """The policy of the live key with this secret; None for unknown, revoked or expired keys
    (read from the database each time, so revocation takes effect at once)."""
    policy = policy_module.load_policy(hash_secret(secret)) if secret else None
    if policy is None or policy.is_expired(timezone.now()):
        _record_failure(address)
        return None
    return policy


# --- budgets -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BudgetLine:
    level: str  # "key", "parent key", "team", "project" or "organization"
    owner: str
    use: utilisation.BudgetUse

    @property
    def budget(self) -> Budget:
        return self.use.budget

    @property
    def label(self) -> str:
        tier = ", ".join([*self.budget.model_patterns, *self.budget.provider_names])
        return f"{self.level} {tier} budget" if tier else f"{self.level} budget"


def budget_lines(policy: KeyPolicy, *, now: dt.datetime) -> list[BudgetLine]:
    """Every budget the key is held to, most specific first, with spend and forecast."""
    rules = {rule.budget_id: rule for rule in policy.budgets}
    budgets = list(
        Budget.objects.filter(pk__in=list(rules)).select_related(
            "organization", "team", "project", "virtual_key", "virtual_key__parent"
        )
    )
    uses = utilisation.with_forecasts(utilisation.budget_use(budgets, now=now))
    lines = []
    for rule in policy.budgets:  # the snapshot's order: key, parent key, team, project, org
        if rule.budget_id not in uses:
            continue  # deleted since the snapshot was built
        level = rule.scope
        if rule.scope == "key" and rule.owner_id != policy.key_id:
            level = "parent key"
        lines.append(BudgetLine(level, rule.owner_name, uses[rule.budget_id]))
    return lines


def _budget_json(line: BudgetLine, zone: zoneinfo.ZoneInfo) -> dict[str, Any]:
    use, budget = line.use, line.budget
    return {
        "level": line.level,
        "owner": line.owner,
        "label": line.label,
        "period": budget.period,
        "models": list(budget.model_patterns),
        "providers": list(budget.provider_names),
        "on_exhaust": budget.on_exhaust,
        "limit_micros": use.limit_micros,
        "limit_usd": reports.usd(use.limit_micros),
        "spent_micros": use.spent_micros,
        "spent_usd": reports.usd(use.spent_micros),
        "remaining_micros": use.remaining_micros,
        "remaining_usd": reports.usd(use.remaining_micros),
        "percent_used": use.percent,
        "resets_at": _iso(use.period.end, zone),
        "forecast": {
            "daily_rate_micros": use.daily_rate_micros,
            "exhausted_at": _iso(use.exhaustion_at, zone),
        },
    }


def _iso(moment: dt.datetime | None, zone: zoneinfo.ZoneInfo) -> str | None:
    return moment.astimezone(zone).isoformat() if moment is not None else None


# --- limits and models ---------------------------------------------------------------------------


def rate_limits(policy: KeyPolicy) -> list[dict[str, Any]]:
    return [
        {
            "level": "parent key"
            if rule.scope == "key" and rule.owner_id != policy.key_id
            else rule.scope,
            "owner": rule.owner_name,
            "requests_per_minute": rule.requests_per_minute,
            "tokens_per_minute": rule.tokens_per_minute,
            "concurrent": rule.concurrent,
        }
        for rule in policy.rate_limits
    ]


def models(policy: KeyPolicy) -> dict[str, Any]:
    """The routed model names the key may use, the name patterns routed beyond them, and the
    rules that decide (key, parent key, team)."""
    names = set(selectors.enabled_deployments().values_list("route__public_name", flat=True))
    patterns = sorted(name for name in names if any(c in name for c in "*?["))
    exact = sorted(name for name in names - set(patterns) if policy.allows_model(name))
    return {
        "allowed": exact,
        "routed_patterns": patterns,
        "rules": [
            {
                "level": "parent key"
                if rule.scope == "key" and rule.owner_id != policy.key_id
                else rule.scope,
                "owner": rule.owner_name,
                "allow": list(rule.allowed),
                "deny": list(rule.denied),
                "overrides": dict(rule.overrides),
            }
            for rule in policy.model_rules
        ],
    }


# --- usage ---------------------------------------------------------------------------------------


def recent_usage(policy: KeyPolicy, *, now: dt.datetime) -> dict[str, Any]:
    """The key's own requests and cost over the last 30 days: per day (in the organization's
    time zone), per model and per day and model, and its most expensive sessions."""
    start = now - dt.timedelta(days=USAGE_DAYS)
    table = rollups.spend_table(
        policy.organization_id,
        start,
        now,
        dimensions=["model"],
        granularity="day",
        tz=policy.timezone,
        filters={"key": [policy.key_id]},
    )
    days: dict[str, rollups.Totals] = defaultdict(rollups.Totals)
    by_model: dict[str, rollups.Totals] = defaultdict(rollups.Totals)
    for row in table:
        counts = [getattr(row, name) for name in rollups.COUNTS]
        days[_day(row.bucket)].add(counts)
        by_model[str(row.groups[0])].add(counts)
    sessions = rollups.session_table(
        policy.organization_id,
        start.date(),
        now.date(),
        dimensions=["session"],
        filters={"key": [policy.key_id]},
    )
    sessions.sort(key=lambda line: -line.cost_micros)
    return {
        "since": start.isoformat(),
        "by_day": [_totals({"day": day}, totals) for day, totals in sorted(days.items())],
        "by_model": [
            _totals({"model": model}, totals)
            for model, totals in sorted(by_model.items(), key=lambda item: -item[1].cost_micros)
        ],
        "by_day_and_model": [
            _totals({"day": _day(row.bucket), "model": row.groups[0]}, row) for row in table
        ],
        "sessions": [
            _totals({"session_id": line.groups[0]}, line) for line in sessions[:TOP_SESSIONS]
        ],
    }


def _day(bucket: dt.datetime | dt.date | None) -> str:
    if isinstance(bucket, dt.datetime):
        return bucket.date().isoformat()
    return bucket.isoformat() if bucket is not None else ""


def _totals(head: dict[str, Any], totals: rollups.Totals) -> dict[str, Any]:
    return {
        **head,
        "requests": totals.requests,
        "input_tokens": totals.input_tokens,
        "output_tokens": totals.output_tokens,
        "cache_read_tokens": totals.cache_read_tokens,
        "cache_write_tokens": totals.cache_write_tokens,
        "cost_micros": totals.cost_micros,
        "cost_usd": reports.usd(totals.cost_micros),
    }


# --- the whole view ------------------------------------------------------------------------------


def key_json(policy: KeyPolicy) -> dict[str, Any]:
    return {
        "name": policy.key_name,
        "prefix": policy.prefix,
        "parent": policy.parent_name or None,
        "organization": policy.organization_name,
        "team": policy.team_name or None,
        "project": policy.project_name or None,
        "timezone": policy.timezone,
        "expires_at": policy.expires_at.isoformat() if policy.expires_at else None,
    }


def overview(policy: KeyPolicy, *, now: dt.datetime | None = None) -> dict[str, Any]:
    """Everything GET /api/v1/me answers, JSON-ready."""
    now = now or timezone.now()
    zone = zoneinfo.ZoneInfo(policy.timezone)
    lines = budget_lines(policy, now=now)
    return {
        "key": key_json(policy),
        "budgets": [_budget_json(line, zone) for line in lines],
        "statusline": statusline_text(lines, zone),
        "rate_limits": rate_limits(policy),
        "models": models(policy),
        "usage": recent_usage(policy, now=now),
        "generated_at": now.isoformat(),
    }


def statusline_text(lines: Sequence[BudgetLine], zone: zoneinfo.ZoneInfo) -> str:
    """One line for Claude Code's statusLine: the fullest budget, e.g. "team budget 63 % used,
    resets Dec 1". Ties go to the most specific budget."""
    if not lines:
        return "no budget limits"
    fullest = max(lines, key=lambda line: (line.use.percent, -lines.index(line)))
    use = fullest.use
    used = f"{fullest.label} {use.percent} % used"
    if use.exhausted:
        used = f"{fullest.label} exhausted ({use.percent} % used)"
    if use.period.end is None:
        return f"{used}, never resets"
    end = use.period.end.astimezone(zone)
    return f"{used}, resets {end:%b} {end.day}"


def statusline(policy: KeyPolicy) -> str:
    """The status line, computed at most every STATUSLINE_SECONDS per key."""
    key = f"selfservice:statusline:{policy.key_id}"
    cached = cache.get(key)
    if isinstance(cached, str):
        return cached
    now = timezone.now()
    text = statusline_text(budget_lines(policy, now=now), zoneinfo.ZoneInfo(policy.timezone))
    cache.set(key, text, STATUSLINE_SECONDS)
    return text
