"""Frozen policy snapshots: the only governance data the proxy sees.

A KeyPolicy carries everything needed to admit a request for one key without touching the
database: the budget chain (key -> parent key -> team -> project -> organization, each with its
model-tier budgets), the rate limits of key, parent key and team, and the model rules.

Snapshots are cached per process and invalidated by a shared version number: every governance
write bumps it on commit, and each process re-reads it at most every
GATEWAY_POLICY_CHECK_SECONDS (default 1 s), so an admin change reaches every process within
about a second. A bump that fails (Redis down) is retried from an outbox (governance/outbox.py),
and every snapshot is reloaded after GATEWAY_SNAPSHOT_MAX_AGE_SECONDS (proxy/snapshots.py)
whatever the version says.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TypeVar

from django.conf import settings
from django.core.cache import cache
from django.db import connection

from governance.modelnames import names_of
from governance.pricing import PriceBook

T = TypeVar("T")
VERSION_CACHE_KEY = "policy:version"
MAX_CACHED_ENTRIES = 50_000


def matches_any(value: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(value, pattern) for pattern in patterns)


@dataclass(frozen=True, slots=True)
class BudgetRule:
    budget_id: int
    scope: str  # "key", "team", "project" or "organization"
    owner_id: int
    owner_name: str
    amount_micros: int
    period: str
    model_patterns: tuple[str, ...] = ()
    provider_names: tuple[str, ...] = ()
    on_exhaust: str = "block"
    downgrade_model: str = ""
    alert_thresholds: tuple[int, ...] = (50, 80, 100)

    def applies_to(self, *, model: str, provider: str = "") -> bool:
        """`model` is the governed model (the canonical id of what the deployment serves)."""
        if self.model_patterns and not any(
            matches_any(name, self.model_patterns) for name in names_of(model)
        ):
            return False
        return not self.provider_names or provider in self.provider_names

    @property
    def follows_target(self) -> bool:
        """Whether this budget may apply to one deployment of a route and not another."""
        return bool(self.model_patterns or self.provider_names)

    @property
    def label(self) -> str:
        tier = f" ({', '.join(self.model_patterns)})" if self.model_patterns else ""
        return f'{self.scope} "{self.owner_name}" {self.period} budget{tier}'


@dataclass(frozen=True, slots=True)
class RateLimitRule:
    scope: str  # "key" or "team"
    owner_id: int
    owner_name: str
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    concurrent: int | None = None


@dataclass(frozen=True, slots=True)
class ModelRule:
    scope: str
    owner_id: int
    owner_name: str
    allowed: tuple[str, ...] = ()
    denied: tuple[str, ...] = ()
    overrides: tuple[tuple[str, str], ...] = ()

    def refusal(self, model: str) -> str:
        """Why this rule refuses `model`, or "" if it allows it.

        Both the name as written and its canonical id are matched: a deny rule catches every
        alias of a denied model, and an allow rule accepts a model under any of its names.
        """
        names = names_of(model)
        if any(matches_any(name, self.denied) for name in names):
            return f'model "{model}" is denied by the {self.scope} "{self.owner_name}" policy'
        if self.allowed and not any(matches_any(name, self.allowed) for name in names):
            return (
                f'model "{model}" is not in the allowed list of the {self.scope} '
                f'"{self.owner_name}" policy ({", ".join(self.allowed)})'
            )
        return ""


@dataclass(frozen=True, slots=True)
class ToolGrantRule:
    """MCP tools of one server that one level of a key's chain grants (shell patterns).

    Levels: "organization", "team", "project", "key" (the key and its parent key). A tool is
    usable when some level grants its server, every level with a grant for that server allows
    it, and no grant denies it: a key narrows its team, never widens it.
    """

    level: str
    owner_name: str
    server: str
    allowed: tuple[str, ...] = ()
    denied: tuple[str, ...] = ()
    # Tells apart two owners at one level: a sub-key and its parent are both "key", and each
    # must allow the tool.
    owner_id: int = 0


@dataclass(slots=True)  # not frozen: made per request, and frozen costs 3x to build
class ModelDecision:
    model: str  # the model to serve, after tier overrides
    refusal: str = ""

    @property
    def allowed(self) -> bool:
        return not self.refusal


@dataclass(frozen=True, slots=True)
class KeyPolicy:
    key_id: int
    key_name: str
    prefix: str
    organization_id: int
    organization_name: str
    timezone: str
    fail_open: bool
    parent_id: int | None = None
    parent_name: str = ""
    team_id: int | None = None
    team_name: str = ""
    project_id: int | None = None
    project_name: str = ""
    expires_at: dt.datetime | None = None
    log_content: bool = False
    # The organization's choice for a routed model without a price: "refuse" or "fallback".
    unpriced_models: str = "refuse"
    unpriced_fallback_model: str = ""
    # Claude-subscription traffic (OAuth sign-in + x-gateway-key): "refuse", "showback" or
    # "budgeted" (proxy/subscription.py).
    subscription_traffic: str = "refuse"
    budgets: tuple[BudgetRule, ...] = ()
    rate_limits: tuple[RateLimitRule, ...] = ()
    model_rules: tuple[ModelRule, ...] = ()  # most specific first: key, parent key, team
    tool_grants: tuple[ToolGrantRule, ...] = ()
    # Code Mode for this key's MCP tools: "inherit" (each server's setting), "on" or "off".
    mcp_code_mode: str = "inherit"
    # The team's managed-settings availableModels (empty: no such list), enforced server-side.
    available_models: tuple[str, ...] = ()

    def is_expired(self, now: dt.datetime) -> bool:
        return self.expires_at is not None and self.expires_at <= now

    def decide_model(self, requested: str) -> ModelDecision:
        """Apply the most specific matching tier override, then every rule must allow it."""
        model = requested
        names = names_of(requested)
        for rule in self.model_rules:
            target = next(
                (t for p, t in rule.overrides if any(fnmatch.fnmatchcase(n, p) for n in names)),
                "",
            )
            if target:
                model = target
                break
        refusal = self.refusal(model)
        return ModelDecision(model=model, refusal=refusal)

    def refusal(self, model: str) -> str:
        """The first refusal of `model` by the rules (most specific first), or ""."""
        for rule in self.model_rules:
            refusal = rule.refusal(model)
            if refusal:
                return refusal
        return ""

    def allows_model(self, model: str) -> bool:
        return not self.refusal(model)

    def available(self, model: str) -> bool:
        """Whether `model` is in the team's availableModels (any name of it), or no list."""
        if not self.available_models:
            return True
        names = names_of(model.removesuffix("[1m]").removesuffix("[1M]"))
        return any(matches_any(name, self.available_models) for name in names)

    def budgets_for(self, *, model: str, provider: str = "") -> tuple[BudgetRule, ...]:
        return tuple(b for b in self.budgets if b.applies_to(model=model, provider=provider))

    def tool_refusal(self, server: str, tool: str) -> str:
        """Why this key may not use MCP tool `tool` of `server`, or "" if it may.

        Every owner with a grant for the server must allow the tool (a sub-key and its parent
        key are two owners at level "key"), and no grant may deny it. The refusal names the
        most specific grant that refuses (grants come most specific first).
        """
        grants = [g for g in self.tool_grants if g.server == server]
        if not grants:
            return f'no grant gives this key the tools of MCP server "{server}"'
        for grant in grants:
            if matches_any(tool, grant.denied):
                return f'tool "{tool}" is denied by the {grant.level} "{grant.owner_name}" grant'
        owners: dict[tuple[str, int, str], list[ToolGrantRule]] = {}
        for grant in grants:
            owners.setdefault((grant.level, grant.owner_id, grant.owner_name), []).append(grant)
        for (level, _, owner), rules in owners.items():
            if not any(matches_any(tool, rule.allowed) for rule in rules):
                return f'tool "{tool}" is not granted by the {level} "{owner}" grant'
        return ""

    def tool_allowed(self, server: str, tool: str) -> bool:
        return not self.tool_refusal(server, tool)

    def granted_servers(self) -> frozenset[str]:
        return frozenset(g.server for g in self.tool_grants)

    def allowed_tools(self, server: str, tools: Iterable[str]) -> list[str]:
        """The names among `tools` (a server's tool list) this key may list and call."""
        return [tool for tool in tools if self.tool_allowed(server, tool)]

    def uses_code_mode(self, server: McpServerConfig) -> bool:
        """Whether `server`'s tools reach this key as Code Mode meta-tools."""
        if self.mcp_code_mode == "inherit":
            return server.code_mode
        return self.mcp_code_mode == "on"


@dataclass(frozen=True, slots=True)
class ProviderConfig:
    name: str
    kind: str
    base_url: str
    region: str
    settings: Mapping[str, object]
    credentials: Mapping[str, str] = field(repr=False, default_factory=dict)


@dataclass(frozen=True, slots=True)
class ToolPrice:
    """What one MCP tool call costs: per call, plus per started kilobyte of its result."""

    per_call_micros: int = 0
    per_kb_micros: int = 0

    def cost_micros(self, result_bytes: int) -> int:
        return self.per_call_micros + self.per_kb_micros * ((result_bytes + 1023) // 1024)


@dataclass(frozen=True, slots=True)
class McpServerConfig:
    """An upstream MCP server as the gateway's MCP data plane sees it."""

    name: str
    transport: str  # "http" (Streamable HTTP) or "stdio" (a process the gateway launches)
    url: str = ""
    command: tuple[str, ...] = ()  # stdio: the program and its arguments
    env: Mapping[str, str] = field(default_factory=dict)  # stdio: non-secret variables
    code_mode: bool = False
    timeout_seconds: float = 60.0
    price: ToolPrice = ToolPrice()
    tool_prices: tuple[tuple[str, ToolPrice], ...] = ()  # (tool pattern, price), first match
    # Secrets from the server's configuration, never from the client: HTTP headers
    # ({"headers": {...}}) and stdio environment ({"env": {...}}).
    credentials: Mapping[str, Mapping[str, str]] = field(repr=False, default_factory=dict)

    def price_of(self, tool: str) -> ToolPrice:
        for pattern, price in self.tool_prices:
            if fnmatch.fnmatchcase(tool, pattern):
                return price
        return self.price


@dataclass(frozen=True, slots=True)
class McpCatalog:
    """Every enabled MCP server by name (a snapshot, replaced when servers change)."""

    servers: Mapping[str, McpServerConfig] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RouteTarget:
    provider: ProviderConfig
    upstream_model: str
    position: int
    weight: int


@dataclass(frozen=True, slots=True)
class RoutingTable:
    """Public model names (or patterns such as `claude-*`) to deployments in failover order.

    An exact name beats a pattern, a longer pattern beats a shorter one. A deployment whose
    upstream model is empty or `*` serves the requested name unchanged.

    `PROVIDER/MODEL` (`anthropic/claude-opus-4-6`, `bedrock/us.anthropic.claude-sonnet-4-6-v1:0`,
    `groq/llama-3.3-70b`) pins a provider, named by its name or its kind: the deployments of
    MODEL's route on that provider, or, when the route has none there (or MODEL has no route),
    that provider serving MODEL as written. A name that is itself a route (OpenRouter-style
    `meta-llama/llama-3`) is that route.
    """

    routes: Mapping[str, tuple[RouteTarget, ...]]
    # Every enabled provider by name, for pinned names whose route has no deployment there.
    providers: Mapping[str, ProviderConfig] = field(default_factory=dict)
    # Model -> resolved targets, filled on first use: every request resolves its model, and
    # sorting and matching the patterns each time showed up in the hot path's profile. The
    # table is replaced, never changed, when routes change, so entries never go stale.
    _resolved: dict[str, tuple[RouteTarget, ...]] = field(
        default_factory=dict, compare=False, repr=False
    )

    def targets_for(self, model: str) -> tuple[RouteTarget, ...]:
        resolved = self._resolved.get(model)
        if resolved is None:
            resolved = self._resolve(model)
            if len(self._resolved) >= 4096:  # model names come from clients
                self._resolved.clear()
            self._resolved[model] = resolved
        return resolved

    def _resolve(self, model: str) -> tuple[RouteTarget, ...]:
        targets = self._route(model)
        if not targets and "/" in model:
            targets = self._pinned(*model.split("/", 1))
        return targets

    def _route(self, model: str) -> tuple[RouteTarget, ...]:
        targets = self.routes.get(model)
        if targets is None:
            patterns = sorted(
                (name for name in self.routes if any(c in name for c in "*?[")),
                key=len,
                reverse=True,
            )
            name = next((p for p in patterns if fnmatch.fnmatchcase(model, p)), None)
            targets = self.routes[name] if name is not None else ()
        return tuple(
            t if t.upstream_model not in ("", "*") else replace(t, upstream_model=model)
            for t in targets
        )

    def _pinned(self, provider: str, model: str) -> tuple[RouteTarget, ...]:
        def pinned(config: ProviderConfig) -> bool:
            return provider in (config.name, config.kind)

        on_route = tuple(t for t in self._route(model) if pinned(t.provider))
        if on_route:
            return on_route
        return tuple(
            RouteTarget(provider=config, upstream_model=model, position=index, weight=1)
            for index, config in enumerate(
                c for _, c in sorted(self.providers.items()) if pinned(c)
            )
        )

    def public_names(self) -> list[str]:
        """Exact route names, and each with the name of every provider that serves it."""
        names = set()
        for name, targets in self.routes.items():
            if any(c in name for c in "*?["):
                continue
            names.add(name)
            names.update(f"{target.provider.name}/{name}" for target in targets)
        return sorted(names)


# --- loading (sync, ORM; never called on a warm request) -------------------------------------


def load_policy(lookup_hash: str) -> KeyPolicy | None:
    from governance import snapshots  # the ORM side lives apart so proxy/ never imports it

    return snapshots.build_key_policy(lookup_hash)


def load_routing() -> RoutingTable:
    from governance import snapshots

    return snapshots.build_routing_table()


def load_price_book() -> PriceBook:
    from governance import snapshots

    return snapshots.build_price_book()


def load_mcp_catalog() -> McpCatalog:
    from governance import snapshots

    return snapshots.build_mcp_catalog()


# --- the tool lists the MCP data plane has seen (for the admin's preview) --------------------

MCP_TOOLS_CACHE_KEY = "mcp:tools:"
MCP_TOOLS_TTL_SECONDS = 24 * 3600
MAX_REMEMBERED_TOOLS = 1000


def _tool_names(tools: Iterable[str]) -> list[str]:
    return sorted({str(name) for name in tools})[:MAX_REMEMBERED_TOOLS]


def remember_mcp_tools(server: str, tools: Iterable[str]) -> None:
    """Remember the tool names an upstream server listed, in the shared cache (sync)."""
    cache.set(MCP_TOOLS_CACHE_KEY + server, _tool_names(tools), MCP_TOOLS_TTL_SECONDS)


async def aremember_mcp_tools(server: str, tools: Iterable[str]) -> None:
    """remember_mcp_tools for the event loop."""
    await cache.aset(MCP_TOOLS_CACHE_KEY + server, _tool_names(tools), MCP_TOOLS_TTL_SECONDS)


def known_mcp_tools(server: str) -> tuple[str, ...] | None:
    """The tool names the data plane last saw `server` list (None: not known here)."""
    names = cache.get(MCP_TOOLS_CACHE_KEY + server)
    return tuple(str(name) for name in names) if isinstance(names, list) else None


def detached(loader: Callable[..., T]) -> Callable[..., T]:
    """Wrap a loader for a worker thread off the event loop: close its connection afterwards
    (under ASGI, CONN_MAX_AGE=0 and the pool take it back)."""

    def run(*args: object) -> T:
        try:
            return loader(*args)
        finally:
            connection.close()

    return run


# --- invalidation ---------------------------------------------------------------------------


def _version_file() -> Path | None:
    """On the embedded default the version lives in a file, so a change made by another
    process on this machine (`apply_config`, `manage.py shell`) reaches a running gateway
    just as an admin change does; with Redis it lives in the shared cache."""
    return None if settings.REDIS_URL else Path(settings.GATEWAY_POLICY_VERSION_FILE)


def _fresh_version() -> int:
    """Where a lost version starts again: the wall clock in milliseconds.

    A Redis restarted empty (or a deleted version file) would otherwise count up from 1 again
    and could land on the very number a gateway last saw, which would then miss the change.
    """
    return time.time_ns() // 1_000_000


def current_version() -> int:
    path = _version_file()
    if path is None:
        return int(cache.get(VERSION_CACHE_KEY) or 0)
    try:
        return int(path.read_text() or 0)
    except (FileNotFoundError, ValueError):
        return 0


def invalidate_all() -> int:
    """Bump the shared version (raises if it cannot be written). Returns the new version.

    Governance writes go through `invalidate_on_commit`, which retries a failed bump.
    """
    path = _version_file()
    if path is not None:
        # Two processes racing may both write N + 1: either way every reader sees a new
        # version and reloads everything, which is all the number is for.
        version = (current_version() or _fresh_version()) + 1
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        temporary.write_text(str(version))
        os.replace(temporary, path)
        return version
    cache.add(VERSION_CACHE_KEY, _fresh_version(), timeout=None)
    try:
        return int(cache.incr(VERSION_CACHE_KEY))
    except ValueError:  # evicted between add and incr
        version = _fresh_version() + 1
        cache.set(VERSION_CACHE_KEY, version, timeout=None)
        return version


def invalidate_on_commit() -> None:
    """Every governance write calls this inside its transaction.

    It records the change in the outbox with the write and bumps the shared version after
    commit (bumping before could let a gateway re-cache the old rows); a bump that fails then
    is retried by the `policy_outbox` job (governance/outbox.py).
    """
    from governance import outbox  # the ORM side lives apart so proxy/ never imports it

    outbox.record_change()
