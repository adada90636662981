"""MCP tool calls in telemetry: the ledger, budgets (counter seed, period records and
reconciliation agree with admission), rollups, the spend dashboard, /logs, Prometheus, OTel
and Datadog."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone
from prometheus_client import generate_latest

from governance import policy
from governance.models import Budget, MCPServer, VirtualKey
from governance.policy import KeyPolicy
from governance.services import common
from telemetry import ledger, metrics, observe, periods, reconcile, rollups
from telemetry.dashboards import tools
from telemetry.dashboards.utilisation import _cell_matches
from telemetry.exporters import datadog, otel
from telemetry.models import UsageRecord
from tests import factories
from tests.telemetry.test_metrics import scrape
from tests.telemetry.test_otel import Receiver, receiver
from tests.telemetry.usage_events import event, write

FIXTURES = (receiver,)
ACTOR = factories.TEST_ACTOR
POLICY = KeyPolicy(
    key_id=3,
    key_name="alice",
    prefix="sk-gw-abc",
    organization_id=1,
    organization_name="tools-org",
    timezone="UTC",
    fail_open=False,
    parent_id=2,
    parent_name="vk-ml",
    team_id=5,
    team_name="ml",
)


def tool_event(
    created_at: dt.datetime,
    *,
    key: VirtualKey | None = None,
    server: str = "github",
    tool: str = "search_issues",
    cost: int = 2_500,
    **fields: Any,
) -> dict[str, Any]:
    """A tool call's usage event as the MCP data plane emits it (the interface file)."""
    values = event(created_at, key=key, cost=cost)
    for name in ("served_model", "routed_model", "input_tokens", "output_tokens"):
        values.pop(name)
    for name in ("cache_read_tokens", "cache_write_5m_tokens", "cache_write_1h_tokens"):
        values.pop(name)
    values.update(
        route="mcp.tool",
        provider=f"mcp:{server}",
        tool_server=server,
        tool_name=tool,
        result_bytes=3_000,
        latency_ms=40,
        session_id="mcp-session-1",
    )
    values.update(fields)
    return values


# --- the ledger -------------------------------------------------------------------------------


def test_a_tool_call_event_is_cleaned_to_its_columns() -> None:
    cleaned = ledger.clean_event(
        tool_event(timezone.now(), tool="t" * 300, result_bytes="2048", server="git\x00hub")
    )

    assert cleaned["route"] == "mcp.tool"
    assert len(cleaned["tool_name"]) == 128
    assert cleaned["tool_server"] == "github"
    assert cleaned["result_bytes"] == 2048
    assert cleaned["input_tokens"] == 0 and cleaned["served_model"] == ""


# --- budgets: what admission charges is what the ledger counts ----------------------------------


@pytest.fixture
def spending_key(db: None) -> VirtualKey:
    org = factories.organization(name="tools-org")
    team = factories.team(organization=org, name="backend")
    key = factories.virtual_key(team=team, name="vk-backend")
    github = MCPServer(name="github", url="http://127.0.0.1:9/mcp")
    common.save_instance(github, actor=ACTOR)
    budgets: list[dict[str, Any]] = [
        {"owner": team},
        {"owner": key},
        {"owner": org, "provider_names": ["mcp:github"]},
        {"owner": org, "provider_names": ["mcp:docs"]},
        {"owner": org, "provider_names": ["anthropic"]},
        {"owner": team, "model_patterns": ["claude-*"]},
        {"owner": team, "model_patterns": ["*"]},
    ]
    for fields in budgets:
        factories.budget(amount_micros=100_000_000, **fields)
    return key


@pytest.mark.django_db
def test_tool_costs_count_against_exactly_the_budgets_admission_charges(
    steady_clock: dt.datetime, spending_key: VirtualKey
) -> None:
    now = timezone.now()
    write(
        tool_event(now - dt.timedelta(minutes=30), key=spending_key, cost=2_500),
        tool_event(now - dt.timedelta(minutes=20), key=spending_key, cost=700, tool="get_issue"),
        event(now - dt.timedelta(minutes=10), key=spending_key, cost=1_000_000),
    )
    key_policy = policy.load_policy(spending_key.lookup_hash)
    assert key_policy is not None
    charged = {rule.budget_id for rule in key_policy.budgets_for(model="", provider="mcp:github")}

    for rule in key_policy.budgets:
        budget = Budget.objects.select_related("organization").get(pk=rule.budget_id)
        window = periods.current_window(budget, now)
        # What admission seeds the budget's counter from (proxy/runtime.py _ledger_spend).
        seed = ledger.spend_micros(
            scope=rule.scope,
            owner_id=rule.owner_id,
            start=window.start,
            end=window.end,
            model_patterns=rule.model_patterns,
            provider_names=rule.provider_names,
        )
        llm = 1_000_000 if rule.applies_to(model="claude-sonnet-4-6", provider="anthropic") else 0
        assert seed == llm + (3_200 if rule.budget_id in charged else 0), rule.label
        # The period record and reconciliation read the rollups (plus the ledger tail).
        assert periods.budget_spend(budget, window.start, window.end) == seed, rule.label
        rollups.run_rollups(settle_seconds=0)
        assert periods.budget_spend(budget, window.start, window.end) == seed, rule.label
    assert len(charged) == 4  # team, key, mcp:github, models ["*"]
    report = reconcile.reconcile_budgets(now=now)
    ledger_figures = {check.budget_id: check.ledger_micros for check in report.checks}
    for rule in key_policy.budgets:
        expected = 3_200 if rule.budget_id in charged else 0
        assert ledger_figures[rule.budget_id] - expected in (0, 1_000_000)


@pytest.mark.parametrize(
    ("patterns", "matches"), [((), True), (("claude-*",), False), (("*",), True)]
)
def test_a_forecast_reads_a_tool_cell_as_admission_governs_it(
    patterns: tuple[str, ...], matches: bool
) -> None:
    budget = Budget(organization_id=1, model_patterns=list(patterns), amount_micros=1)
    cell = (1, 0, 0, 0, "mcp:github/claude-helper", "mcp:github")

    assert _cell_matches(budget, cell, {}) is matches


# --- rollups and the spend dashboard ------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("rolled_up", [False, True])
def test_the_tools_breakdown_sums_calls_and_spend_per_server_and_tool(
    spending_key: VirtualKey, rolled_up: bool
) -> None:
    now = timezone.now()
    write(
        tool_event(now - dt.timedelta(hours=2), key=spending_key, cost=2_000),
        tool_event(now - dt.timedelta(hours=1), key=spending_key, cost=500, status=502),
        tool_event(now, key=spending_key, tool="list_pages", server="docs", cost=9_000),
        event(now, key=spending_key, cost=1_000_000),
    )
    if rolled_up:
        rollups.run_rollups(settle_seconds=0)

    series = rollups.spend_breakdown(
        spending_key.organization_id,
        now - dt.timedelta(days=1),
        now + dt.timedelta(hours=1),
        group_bys=["model"],
    )["model"]

    assert tools.tool_lines(series) == [
        tools.ToolLine("docs", "list_pages", 1, 0, 9_000),
        tools.ToolLine("github", "search_issues", 2, 1, 2_500),
    ]
    assert {tools.model_label(p.group) for p in series} == {"MCP tools", "claude-sonnet-4-6"}


@pytest.mark.django_db
def test_the_spend_page_shows_the_tools_and_exports_them(
    admin_client: Client, spending_key: VirtualKey
) -> None:
    write(tool_event(timezone.now(), key=spending_key, cost=2_000))
    org = spending_key.organization_id

    page = admin_client.get(f"/dashboards/spend?org={org}&range=7d").content.decode()
    export = admin_client.get(f"/dashboards/spend?org={org}&range=7d&format=csv&export=tools")

    assert '<section class="card" id="tools">' in page
    assert "<code>search_issues</code>" in page and "provider=mcp%3Agithub" in page
    assert export.content.decode().splitlines() == [
        "server,tool,calls,errors,cost_usd",
        "github,search_issues,1,0,0.002000",
    ]


# --- /logs --------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_request_log_shows_a_tool_call_as_server_and_tool(
    admin_client: Client, spending_key: VirtualKey
) -> None:
    call = tool_event(timezone.now(), key=spending_key)
    write(call)

    listing = admin_client.get("/logs?provider=mcp:github").content.decode()
    detail = admin_client.get(f"/logs/{call['request_id']}").content.decode()

    assert "github/search_issues" in listing and "MCP tool" in listing
    assert "2.9\xa0KB" in listing  # the result's size where tokens would be
    assert "<h2>MCP tool</h2>" in detail and "3,000 bytes" in detail
    assert "<h2>Tokens</h2>" not in detail
    assert UsageRecord.objects.get(request_id=call["request_id"]).provider == "mcp:github"


# --- Prometheus, OTel, Datadog -------------------------------------------------------------------


def _prometheus() -> str:
    return generate_latest(metrics.REGISTRY).decode()


def test_a_tool_call_is_counted_by_server_tool_and_status() -> None:
    labels = {"organization": "tools-org", "server": "github", "tool": "search_issues"}
    before = scrape(_prometheus(), "gateway_mcp_tool_calls_total", status="200", **labels)
    cost_before = scrape(_prometheus(), "gateway_mcp_tool_cost_usd_total", **labels)

    observe.tool_call_finished(tool_event(timezone.now()), POLICY, started=time.perf_counter())

    text = _prometheus()
    assert scrape(text, "gateway_mcp_tool_calls_total", status="200", **labels) == before + 1
    assert scrape(text, "gateway_mcp_tool_cost_usd_total", **labels) == pytest.approx(
        cost_before + 0.0025
    )
    assert scrape(text, "gateway_mcp_tool_duration_seconds_count", tool="search_issues") >= 1


def test_a_guessed_tool_name_never_becomes_a_label() -> None:
    refused = tool_event(timezone.now(), status=404, tool_server="", tool_name="x__guess", cost=0)

    observe.tool_call_finished(refused, POLICY, started=time.perf_counter())

    text = _prometheus()
    assert "x__guess" not in text
    assert scrape(text, "gateway_mcp_tool_calls_total", tool="unknown", status="404") >= 1


def test_a_tool_call_becomes_an_execute_tool_span(receiver: Receiver) -> None:
    call = tool_event(
        dt.datetime(2026, 11, 26, 12, tzinfo=dt.UTC),
        status=200,
        error_type="tool_error",
        traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    )

    observe.tool_call_finished(call, POLICY, started=time.perf_counter() - 0.25)
    assert otel.force_flush()

    [span] = receiver.spans
    assert span.name == "execute_tool search_issues"
    assert span.trace_id == "0af7651916cd43dd8448eb211c80319c"
    assert span.parent_span_id == "b7ad6b7169203331"
    attributes = span.attributes
    assert attributes["gen_ai.operation.name"] == "execute_tool"
    assert attributes["gen_ai.tool.name"] == "search_issues"
    assert attributes["mcp.method.name"] == "tools/call"
    assert attributes["mcp.session.id"] == "mcp-session-1"
    assert attributes["gateway.mcp.server"] == "github"
    assert attributes["gateway.cost.usd"] == pytest.approx(0.0025)
    assert attributes["error.type"] == "tool_error"
    assert span.end_ns - span.start_ns == pytest.approx(0.25e9, rel=0.2)


def test_a_malformed_traceparent_starts_a_new_trace(receiver: Receiver) -> None:
    call = tool_event(dt.datetime(2026, 11, 26, 12, tzinfo=dt.UTC), traceparent="00-zz-1-01")

    observe.tool_call_finished(call, POLICY, started=time.perf_counter())
    assert otel.force_flush()

    [span] = receiver.spans
    assert span.parent_span_id == ""


@pytest.mark.django_db
def test_datadog_gets_tool_calls_as_their_own_series(spending_key: VirtualKey) -> None:
    now = timezone.now()
    write(
        tool_event(now, key=spending_key, cost=2_000),
        tool_event(now, key=spending_key, cost=0, status=504, error_type="timeout_error"),
        event(now, key=spending_key, cost=1_000_000),
    )
    top = UsageRecord.objects.order_by("-id").values_list("id", flat=True)[0]

    series, rows = datadog.usage_series(datadog.Batch(0, top, int(now.timestamp()), 60))

    by_name: dict[str, list[dict[str, Any]]] = {}
    for item in series:
        by_name.setdefault(item["metric"], []).append(item)
    [calls] = by_name["gateway.mcp.tool_calls"]
    assert calls["points"][0]["value"] == 2
    assert {"server:github", "tool:search_issues", "team:backend"} <= set(calls["tags"])
    assert by_name["gateway.mcp.tool_errors"][0]["points"][0]["value"] == 1
    assert by_name["gateway.mcp.cost_usd"][0]["points"][0]["value"] == pytest.approx(0.002)
    [llm] = by_name["gateway.llm.requests"]
    assert llm["points"][0]["value"] == 1 and "provider:anthropic" in llm["tags"]
    assert rows == 3
