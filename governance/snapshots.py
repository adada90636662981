"""Build frozen policy snapshots from the database (sync; the cold path of governance.policy)."""

from __future__ import annotations

from governance import crypto, managed_settings, selectors
from governance.models import (
    Budget,
    MCPServer,
    MCPToolGrant,
    ModelPolicy,
    Organization,
    Provider,
    RateLimit,
    VirtualKey,
)
from governance.models.tools import grouped_credentials
from governance.policy import (
    BudgetRule,
    KeyPolicy,
    McpCatalog,
    McpServerConfig,
    ModelRule,
    ProviderConfig,
    RateLimitRule,
    RouteTarget,
    RoutingTable,
    ToolGrantRule,
    ToolPrice,
)
from governance.pricing import Price, PriceBook, Rates
from governance.signin import documents

SCOPE_ORDER = {"key": 0, "team": 1, "project": 2, "organization": 3}


def build_key_policy(lookup_hash: str) -> KeyPolicy | None:
    found = selectors.key_by_lookup_hash(lookup_hash)
    if found is None:
        return None
    key, via_previous_secret = found
    parent = key.parent
    if key.revoked_at is not None or (parent is not None and parent.revoked_at is not None):
        return None
    # A sub-key is always held to its parent's team and project.
    team = parent.team if parent is not None else key.team
    project = parent.project if parent is not None else key.project
    expiries = [key.expires_at, parent.expires_at if parent else None]
    if via_previous_secret:
        expiries.append(key.previous_valid_until)
    key_ids = [key.pk] + ([parent.pk] if parent is not None else [])
    org: Organization = key.organization
    return KeyPolicy(
        key_id=key.pk,
        key_name=key.name,
        prefix=key.prefix,
        organization_id=org.pk,
        organization_name=org.name,
        timezone=org.timezone,
        fail_open=org.admission_fail_mode == Organization.AdmissionFailMode.OPEN,
        parent_id=parent.pk if parent else None,
        parent_name=parent.name if parent else "",
        team_id=team.pk if team else None,
        team_name=team.name if team else "",
        project_id=project.pk if project else None,
        project_name=project.name if project else "",
        expires_at=min((e for e in expiries if e is not None), default=None),
        log_content=key.log_content,
        unpriced_models=org.unpriced_models,
        unpriced_fallback_model=org.unpriced_fallback_model,
        subscription_traffic=org.subscription_traffic,
        budgets=_budget_rules(key, key_ids, team, project, org),
        rate_limits=_rate_limit_rules(key, key_ids, team),
        model_rules=_model_rules(key, key_ids, team),
        tool_grants=_tool_grants(key, key_ids, team, project, org),
        mcp_code_mode=_mcp_code_mode(key, parent),
        available_models=_available_models(org, team),
    )


def _budget_rules(
    key: VirtualKey,
    key_ids: list[int],
    team: object | None,
    project: object | None,
    org: Organization,
) -> tuple[BudgetRule, ...]:
    budgets = selectors.budgets_for_chain(
        key_ids=key_ids,
        team_id=getattr(team, "pk", None),
        project_id=getattr(project, "pk", None),
        organization_id=org.pk,
    )
    rules = [_budget_rule(b, org) for b in budgets]
    # Most specific first (key, parent key, team, project, organization): the first budget
    # found exhausted is the one a refusal names.
    rules.sort(key=lambda r: (SCOPE_ORDER[r.scope], r.owner_id != key.pk, r.budget_id))
    return tuple(rules)


def _budget_rule(budget: Budget, org: Organization) -> BudgetRule:
    owner = budget.virtual_key or budget.team or budget.project or org
    return BudgetRule(
        budget_id=budget.pk,
        scope=budget.scope,
        owner_id=owner.pk,
        owner_name=str(owner.name),
        amount_micros=budget.amount_micros,
        period=budget.period,
        model_patterns=tuple(budget.model_patterns),
        provider_names=tuple(budget.provider_names),
        on_exhaust=budget.on_exhaust,
        downgrade_model=budget.downgrade_model,
        alert_thresholds=tuple(budget.alert_thresholds),
    )


def _rate_limit_rules(
    key: VirtualKey, key_ids: list[int], team: object | None
) -> tuple[RateLimitRule, ...]:
    limits = selectors.rate_limits_for_chain(key_ids=key_ids, team_id=getattr(team, "pk", None))
    rules = [_rate_limit_rule(limit) for limit in limits]
    rules.sort(key=lambda r: (SCOPE_ORDER[r.scope], r.owner_id != key.pk))
    return tuple(rules)


def _rate_limit_rule(limit: RateLimit) -> RateLimitRule:
    owner = limit.virtual_key or limit.team
    assert owner is not None  # guaranteed by the single-owner constraint
    return RateLimitRule(
        scope="key" if limit.virtual_key_id else "team",
        owner_id=owner.pk,
        owner_name=owner.name,
        requests_per_minute=limit.requests_per_minute,
        tokens_per_minute=limit.tokens_per_minute,
        concurrent=limit.concurrent,
    )


def _model_rules(key: VirtualKey, key_ids: list[int], team: object | None) -> tuple[ModelRule, ...]:
    policies = selectors.model_policies_for_chain(
        key_ids=key_ids, team_id=getattr(team, "pk", None)
    )
    rules = [_model_rule(p) for p in policies]
    order = {"key": 0, "team": 1}
    rules.sort(key=lambda r: (order[r.scope], r.owner_id != key.pk))
    return tuple(rules)


def _model_rule(policy: ModelPolicy) -> ModelRule:
    owner = policy.virtual_key or policy.team
    assert owner is not None
    return ModelRule(
        scope="key" if policy.virtual_key_id else "team",
        owner_id=owner.pk,
        owner_name=owner.name,
        allowed=tuple(policy.allowed_patterns),
        denied=tuple(policy.denied_patterns),
        overrides=tuple((str(k), str(v)) for k, v in policy.overrides.items()),
    )


def _tool_grants(
    key: VirtualKey,
    key_ids: list[int],
    team: object | None,
    project: object | None,
    org: Organization,
) -> tuple[ToolGrantRule, ...]:
    grants = selectors.tool_grants_for_chain(
        key_ids=key_ids,
        team_id=getattr(team, "pk", None),
        project_id=getattr(project, "pk", None),
        organization_id=org.pk,
    )
    rules = [_tool_grant_rule(grant) for grant in grants]
    # Most specific first (key, parent key, team, project, organization): a refusal names the
    # grant closest to the key.
    rules.sort(key=lambda r: (SCOPE_ORDER[r.level], r.owner_id != key.pk, r.server))
    return tuple(rules)


def _tool_grant_rule(grant: MCPToolGrant) -> ToolGrantRule:
    owner = grant.owner
    assert owner is not None  # guaranteed by the single-owner constraint
    return ToolGrantRule(
        level=grant.level,
        owner_name=str(owner) if grant.virtual_key_id is not None else owner.name,
        server=grant.server.name,
        allowed=tuple(grant.tool_patterns),
        denied=tuple(grant.denied_patterns),
        owner_id=owner.pk,
    )


def _available_models(org: Organization, team: object | None) -> tuple[str, ...]:
    """availableModels of the team's Claude Code managed settings (organization's base layer
    merged with the team's), which the proxy also enforces."""
    document = documents.team_document(organization_id=org.pk, team_id=getattr(team, "pk", None))
    return managed_settings.available_models(document)


def _mcp_code_mode(key: VirtualKey, parent: VirtualKey | None) -> str:
    """The key's own choice; a sub-key left at "inherit" takes its parent's."""
    inherit = VirtualKey.McpCodeMode.INHERIT
    if key.mcp_code_mode == inherit and parent is not None:
        return str(parent.mcp_code_mode)
    return str(key.mcp_code_mode)


def build_mcp_catalog() -> McpCatalog:
    servers = {
        server.name: _mcp_server_config(server) for server in selectors.enabled_mcp_servers()
    }
    return McpCatalog(servers=servers)


def _mcp_server_config(server: MCPServer) -> McpServerConfig:
    return McpServerConfig(
        name=server.name,
        transport=server.transport,
        url=server.url,
        command=server.destination if server.transport == MCPServer.Transport.STDIO else (),
        env=dict(server.env),
        code_mode=server.code_mode,
        timeout_seconds=float(server.timeout_seconds),
        price=ToolPrice(server.price_per_call_micros, server.price_per_kb_micros),
        tool_prices=tuple(
            (price.tool_pattern, ToolPrice(price.per_call_micros, price.per_kb_micros))
            for price in sorted(server.tool_prices.all(), key=lambda p: (p.position, p.pk))
        ),
        credentials=grouped_credentials(crypto.decrypt_credentials(server.credentials_encrypted)),
    )


def build_routing_table() -> RoutingTable:
    routes: dict[str, list[RouteTarget]] = {}
    providers = {
        provider.pk: _provider_config(provider) for provider in selectors.enabled_providers()
    }
    for deployment in selectors.enabled_deployments():
        routes.setdefault(deployment.route.public_name, []).append(
            RouteTarget(
                provider=providers[deployment.provider_id],
                upstream_model=deployment.upstream_model,
                position=deployment.position,
                weight=deployment.weight,
            )
        )
    return RoutingTable(
        routes={name: tuple(targets) for name, targets in routes.items()},
        providers={config.name: config for config in providers.values()},
    )


def _provider_config(provider: Provider) -> ProviderConfig:
    return ProviderConfig(
        name=provider.name,
        kind=provider.kind,
        base_url=provider.base_url,
        region=provider.region,
        settings=dict(provider.settings),
        credentials=crypto.decrypt_credentials(provider.credentials_encrypted),
    )


def build_price_book() -> PriceBook:
    prices = []
    for row in selectors.all_prices():
        long_context = None
        if row.long_context_threshold is not None and row.long_input_per_mtok is not None:
            long_context = Rates(
                input=row.long_input_per_mtok,
                output=row.long_output_per_mtok or row.output_per_mtok,
                cache_write_5m=row.long_cache_write_5m_per_mtok or row.cache_write_5m_per_mtok,
                cache_write_1h=row.long_cache_write_1h_per_mtok or row.cache_write_1h_per_mtok,
                cache_read=row.long_cache_read_per_mtok or row.cache_read_per_mtok,
            )
        prices.append(
            Price(
                model_pattern=row.model_pattern,
                effective_from=row.effective_from,
                standard=Rates(
                    input=row.input_per_mtok,
                    output=row.output_per_mtok,
                    cache_write_5m=row.cache_write_5m_per_mtok,
                    cache_write_1h=row.cache_write_1h_per_mtok,
                    cache_read=row.cache_read_per_mtok,
                ),
                long_context_threshold=row.long_context_threshold,
                long_context=long_context,
            )
        )
    return PriceBook(prices)
