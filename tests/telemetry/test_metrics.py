"""Prometheus: what a finished request adds, the label guards, budget gauges, and /metrics served
by one gateway process and by two worker processes sharing a multiprocess directory."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import httpx
import pytest
from django.utils import timezone
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from governance.actors import Actor
from governance.models import Deployment
from governance.services import common
from telemetry import budget_gauges, exposition, ledger, metrics, periods
from telemetry.models import BudgetPeriodRecord, SpendRollup
from tests import factories
from tests.fakes.anthropic_upstream import FakeAnthropic, Reply
from tests.proxy.conftest import fake_upstream, free_port, gateway, governed, wait_for

# The proxy tests' harness: pytest finds these fixtures by name in this module.
HARNESS = (fake_upstream, gateway, governed)

ROOT = Path(__file__).resolve().parents[2]
ACTOR = Actor.system("tests")
METRICS_TOKEN = "test-scrape-token-not-a-secret"
BODY = {
    "model": "claude-sonnet-4-6",
    "max_tokens": 12,
    "messages": [{"role": "user", "content": "hi"}],
}
REQUEST_COST_USD = (25 * 3 + 12 * 15) / 1_000_000  # fake upstream's default usage on Sonnet 4.6


def scrape(text: str, name: str, **labels: str) -> float:
    """Sum of the samples called `name` whose labels include `labels`."""
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and labels.items() <= sample.labels.items():
                total += sample.value
    return total


def get_metrics(base_url: str, **headers: str) -> str:
    headers.setdefault("authorization", f"Bearer {METRICS_TOKEN}")
    response = httpx.get(base_url + "/metrics", headers=headers, timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return response.text


@pytest.fixture(autouse=True)
def _metrics_token(settings) -> None:
    """/metrics is closed without a token when DEBUG is off, as it is in these tests."""
    settings.GATEWAY_METRICS_TOKEN = METRICS_TOKEN


@pytest.fixture
def fresh_key_guard(monkeypatch) -> Iterator[metrics.KeyGuard]:
    guard = metrics.KeyGuard(metrics.top_key_ids)
    monkeypatch.setattr(metrics, "KEYS", guard)
    yield guard


def event(**fields: object) -> dict[str, object]:
    base: dict[str, object] = {
        "request_id": "gwreq_1",
        "created_at": timezone.now(),
        "organization_id": 1,
        "team_id": 2,
        "key_id": 3,
        "key_name": "vk",
        "requested_model": "claude-sonnet-4-6",
        "routed_model": "claude-sonnet-4-6",
        "served_model": "claude-sonnet-4-6",
        "provider": "anthropic-direct",
        "status": 200,
        "error_type": "",
        "input_tokens": 100,
        "output_tokens": 20,
        "cache_read_tokens": 1000,
        "cache_write_5m_tokens": 50,
        "cache_write_1h_tokens": 0,
        "cost_micros": 1_234_567,
        "ttfb_ms": 300,
        "attempts": 1,
    }
    return {**base, **fields}


# --- recording -------------------------------------------------------------------------------


def test_a_finished_request_adds_its_tokens_cost_and_timings(fresh_key_guard):
    names = metrics.Names(organization="unit-org-a", team="ml", key="vk")
    cell = {
        "organization": "unit-org-a",
        "team": "ml",
        "key": "vk",
        "model": "claude-sonnet-4-6",
        "provider": "anthropic-direct",
    }
    metrics.record_request(event(), names, total=1.5, overhead=0.002)
    text = generate_latest(exposition.scrape_registry()).decode()
    assert scrape(text, "gateway_requests_total", **cell, status="200") == 1
    assert scrape(text, "gateway_tokens_total", **cell, type="input") == 100
    assert scrape(text, "gateway_tokens_total", **cell, type="cache_read") == 1000
    assert scrape(text, "gateway_tokens_total", **cell, type="cache_write_5m") == 50
    assert scrape(text, "gateway_cost_usd_total", **cell) == pytest.approx(1.234567)
    assert scrape(text, "gateway_errors_total", organization="unit-org-a") == 0
    ttfb = scrape(text, "gateway_time_to_first_byte_seconds_sum", provider="anthropic-direct")
    assert ttfb >= 0.3


def test_errors_are_counted_by_type_and_failovers_by_extra_attempt(fresh_key_guard):
    names = metrics.Names(organization="unit-org-b", team="ml", key="vk")
    metrics.record_request(
        event(status=529, error_type="overloaded_error", attempts=3, cost_micros=0),
        names,
        total=0.1,
        overhead=0.001,
    )
    metrics.record_request(
        event(status=402, error_type="billing_error", provider="", served_model="", ttfb_ms=None),
        names,
        total=0.01,
        overhead=None,
    )
    text = generate_latest(exposition.scrape_registry()).decode()
    org = {"organization": "unit-org-b"}
    assert scrape(text, "gateway_errors_total", **org, error_type="overloaded_error") == 1
    assert scrape(text, "gateway_errors_total", **org, error_type="billing_error") == 1
    assert scrape(text, "gateway_failovers_total", **org, provider="anthropic-direct") == 2
    assert scrape(text, "gateway_requests_total", **org, status="402") == 1


def test_key_label_names_the_first_keys_then_top_spenders_and_others_become_other(settings):
    settings.GATEWAY_METRICS_MAX_KEYS = 2
    settings.GATEWAY_METRICS_TOP_KEYS_REFRESH_SECONDS = 0
    guard = metrics.KeyGuard(lambda limit: [7])
    assert guard.label(1, "alice") == "alice"
    assert guard.label(2, "bob") == "bob"
    # Full: an unknown key is "other" and makes the guard load the top spenders (in a thread).
    assert guard.label(7, "big-spender") == metrics.OTHER
    wait_for(lambda: guard.label(7, "big-spender") == "big-spender")
    assert guard.label(8, "carol") == metrics.OTHER
    assert guard.label(1, "alice") == "alice"  # a named key stays named


def test_model_label_is_capped_too():
    guard = metrics.LabelGuard(limit=2)
    assert [guard(m) for m in ("a", "b", "c", "a")] == ["a", "b", metrics.OTHER, "a"]


@pytest.mark.django_db
def test_top_keys_are_the_biggest_spenders_of_the_last_seven_days():
    now = timezone.now().replace(minute=0, second=0, microsecond=0)
    cells = [(11, 5, 1), (12, 9, 1), (13, 7, 1), (14, 100, 30)]  # key, cost, days ago
    for key_id, cost, days in cells:
        SpendRollup.objects.create(
            granularity=SpendRollup.Granularity.DAY,
            bucket_start=now - dt.timedelta(days=days),
            key_id=key_id,
            cost_micros=cost,
        )
    assert metrics.top_key_ids(2, now) == [12, 13]


# --- budget gauges ---------------------------------------------------------------------------


@pytest.mark.django_db
def test_budget_gauges_show_limit_spent_and_remaining_of_the_current_period(client):
    org = factories.organization(name="gauge-org")
    team = factories.team(organization=org, name="ml")
    budget = factories.budget(owner=team, amount_micros=10_000_000)
    unrecorded = factories.budget(owner=org, amount_micros=50_000_000)
    ledger.write_events(
        [
            {
                "request_id": "gwreq_gauge_1",
                "created_at": timezone.now(),
                "organization_id": org.pk,
                "team_id": team.pk,
                "status": 200,
                "cost_micros": 2_500_000,
            }
        ]
    )
    periods.sync_budget_periods(budget_ids=[budget.pk])
    response = client.get("/metrics", headers={"authorization": f"Bearer {METRICS_TOKEN}"})
    text = response.content.decode()
    labels = {"budget": str(budget.pk), "organization": "gauge-org", "scope": "team", "owner": "ml"}
    assert scrape(text, "gateway_budget_limit_usd", **labels, period="month") == 10.0
    assert scrape(text, "gateway_budget_spent_usd", **labels) == 2.5
    assert scrape(text, "gateway_budget_remaining_usd", **labels) == 7.5
    # No period record yet (the sync has not run for it): the limit, but no made-up spend.
    assert scrape(text, "gateway_budget_limit_usd", budget=str(unrecorded.pk)) == 50.0
    assert f'budget="{unrecorded.pk}"' not in "".join(
        line for line in text.splitlines() if line.startswith("gateway_budget_spent_usd")
    )


@pytest.mark.django_db
def test_only_the_most_spent_key_budgets_are_exported_past_the_key_limit():
    team = factories.team()
    label = periods.current_window(factories.budget(owner=team, amount_micros=100), timezone.now())
    kept = []
    for index, spend in enumerate((5, 50, 20)):
        key = factories.virtual_key(team=team, name=f"k{index}")
        budget = factories.budget(owner=key, amount_micros=100)
        BudgetPeriodRecord.objects.create(
            budget_id=budget.pk, period_label=label.label, limit_micros=100, spent_micros=spend
        )
        if spend > 5:
            kept.append(budget.pk)
    statuses = budget_gauges.budget_statuses(max_keys=2)
    assert sorted(s.budget_id for s in statuses if s.scope == "key") == kept
    assert [s.scope for s in statuses].count("team") == 1


@pytest.mark.django_db
def test_metrics_need_the_bearer_token_when_one_is_set(client, settings):
    settings.GATEWAY_METRICS_TOKEN = "scrape-secret"
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"authorization": "Bearer wrong"}).status_code == 401
    ok = client.get("/metrics", headers={"authorization": "Bearer scrape-secret"})
    assert ok.status_code == 200
    assert b"# TYPE gateway_requests_total counter" in ok.content


@pytest.mark.django_db
def test_metrics_without_a_token_are_closed_to_anonymous_requests_when_debug_is_off(
    client, settings
):
    settings.GATEWAY_METRICS_TOKEN = ""
    settings.DEBUG = False

    response = client.get("/metrics")

    assert response.status_code == 403
    assert b"set GATEWAY_METRICS_TOKEN" in response.content
    assert b"gateway_" not in response.content


@pytest.mark.django_db
def test_metrics_without_a_token_are_open_in_debug_mode(client, settings):
    settings.GATEWAY_METRICS_TOKEN = ""
    settings.DEBUG = True

    assert client.get("/metrics").status_code == 200


@pytest.mark.django_db
@pytest.mark.parametrize("token", ["", "scrape-secret"])
def test_a_staff_session_reads_metrics_without_the_token(admin_client, settings, token):
    settings.GATEWAY_METRICS_TOKEN = token

    response = admin_client.get("/metrics")

    assert response.status_code == 200
    assert b"# TYPE gateway_requests_total counter" in response.content


@pytest.mark.django_db
def test_a_signed_in_user_who_is_not_staff_gets_no_metrics(client, settings, django_user_model):
    settings.GATEWAY_METRICS_TOKEN = ""
    user = django_user_model.objects.create_user("viewer", password="not-a-real-password-1")
    client.force_login(user)

    assert client.get("/metrics").status_code == 403


# --- through the gateway ---------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_proxied_requests_appear_on_metrics_with_failover_and_overhead(
    gateway, governed, fake_upstream, fresh_key_guard
):
    route = Deployment.objects.get().route
    common.save_instance(
        Deployment(route=route, provider=governed.provider, upstream_model="", position=1),
        actor=ACTOR,
    )
    cell = {"organization": "acme", "team": "backend", "key": "vk-backend"}
    before = get_metrics(gateway.base_url)
    fake_upstream.queue(Reply(status=529))
    for _ in range(2):
        response = httpx.post(
            gateway.anthropic_url + "/v1/messages",
            json=BODY,
            headers={"x-api-key": governed.secret},
            timeout=10,
        )
        assert response.status_code == 200

    def delta(name: str, **labels: str) -> float:
        return scrape(get_metrics(gateway.base_url), name, **labels) - scrape(
            before, name, **labels
        )

    wait_for(lambda: delta("gateway_requests_total", **cell, status="200") == 2)
    after = {"provider": "fake-anthropic", "model": "claude-sonnet-4-6"}
    assert delta("gateway_tokens_total", **cell, **after, type="input") == 50
    assert delta("gateway_cost_usd_total", **cell) == pytest.approx(2 * REQUEST_COST_USD)
    assert delta("gateway_failovers_total", organization="acme", team="backend") == 1
    assert delta("gateway_overhead_seconds_count") == 2
    assert delta("gateway_upstream_duration_seconds_count", **after) == 2
    assert delta("gateway_time_to_first_byte_seconds_count", **after) == 2
    assert delta("gateway_request_duration_seconds_count", **after) == 2


@pytest.mark.django_db(transaction=True)
def test_budget_refusals_are_counted_as_billing_errors(gateway, governed, fresh_key_guard):
    factories.budget(owner=governed.team, amount_micros=0)
    labels = {"organization": "acme", "error_type": "billing_error"}
    before = scrape(get_metrics(gateway.base_url), "gateway_errors_total", **labels)
    response = httpx.post(
        gateway.anthropic_url + "/v1/messages",
        json=BODY,
        headers={"x-api-key": governed.secret},
        timeout=10,
    )
    assert response.status_code == 402
    wait_for(
        lambda: (
            scrape(get_metrics(gateway.base_url), "gateway_errors_total", **labels) == before + 1
        )
    )


# --- two worker processes --------------------------------------------------------------------

SEED = textwrap.dedent(
    """
    import os, django
    django.setup()
    from governance.actors import Actor
    from governance.models import Deployment, ModelRoute, Provider
    from governance.services import common, prices, providers
    from telemetry import periods
    from tests import factories

    actor = Actor.system("tests")
    prices.load_price_file(path=prices.DEFAULT_PRICE_FILE, actor=actor)
    org = factories.organization(name="mp-org")
    team = factories.team(organization=org, name="mp-team")
    provider = Provider(name="mp-upstream", kind="anthropic", base_url=os.environ["UPSTREAM"])
    common.save_instance(provider, actor=actor)
    providers.set_credentials(actor=actor, provider=provider, credentials={"api_key": "up-key"})
    route = ModelRoute(public_name="claude-*")
    common.save_instance(route, actor=actor)
    common.save_instance(Deployment(route=route, provider=provider, upstream_model=""), actor=actor)
    issued = factories.issued_key(team=team, name="mp-key")
    budget = factories.budget(owner=team, amount_micros=100_000_000)
    periods.sync_budget_periods()
    print(issued.secret, budget.pk)
    """
)


def _run(args: list[str], env: dict[str, str]) -> str:
    done = subprocess.run(
        args, env=env, cwd=ROOT, capture_output=True, text=True, timeout=180, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def _worker(port: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "uvicorn", "gatewaysite.asgi:application"]
    options = ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    return subprocess.Popen([*command, *options, "--no-access-log"], env=env, cwd=ROOT)


def _healthy(url: str) -> bool:
    try:
        return httpx.get(url + "/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        time.sleep(0.1)
        return False


def _counted(url: str, cell: dict[str, str], expected: int) -> bool:
    return scrape(get_metrics(url), "gateway_requests_total", **cell) == expected


def _multiprocess_env(tmp_path: Path, upstream: FakeAnthropic) -> dict[str, str]:
    (tmp_path / "prometheus").mkdir()
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PROMETHEUS_", "OTEL_", "DD_", "GATEWAY_", "REDIS_"))
    }
    return {
        **env,
        "DJANGO_SETTINGS_MODULE": "gatewaysite.settings_test",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'gateway.sqlite3'}",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prometheus"),
        "GATEWAY_POLICY_CHECK_SECONDS": "0",
        "GATEWAY_SPOOL_DIR": str(tmp_path / "spool"),
        "GATEWAY_METRICS_TOKEN": METRICS_TOKEN,
        "UPSTREAM": upstream.base_url,
    }


def test_metrics_add_up_across_two_worker_processes(tmp_path, fake_upstream):
    env = _multiprocess_env(tmp_path, fake_upstream)
    _run([sys.executable, "manage.py", "migrate", "--no-input", "-v", "0"], env)
    secret, budget_id = _run([sys.executable, "-c", SEED], env).split()[-2:]
    ports = [free_port(), free_port()]
    urls = [f"http://127.0.0.1:{port}" for port in ports]
    workers = [_worker(port, env) for port in ports]
    try:
        for url in urls:
            wait_for(partial(_healthy, url), timeout=30)

        def send(index: int) -> int:
            response = httpx.post(
                urls[index % 2] + "/anthropic/v1/messages",
                json=BODY,
                headers={"x-api-key": secret},
                timeout=30,
            )
            return response.status_code

        with ThreadPoolExecutor(max_workers=4) as pool:
            statuses = list(pool.map(send, range(7)))  # 4 to the first worker, 3 to the second
        assert statuses == [200] * 7
        cell = {"organization": "mp-org", "team": "mp-team", "key": "mp-key"}
        # Either worker answers the scrape, and both count every worker's requests.
        for url in urls:
            wait_for(partial(_counted, url, cell, 7), timeout=10)
        text = get_metrics(urls[1])
        assert scrape(text, "gateway_tokens_total", **cell, type="input") == 7 * 25
        assert scrape(text, "gateway_tokens_total", **cell, type="output") == 7 * 12
        assert scrape(text, "gateway_cost_usd_total", **cell) == pytest.approx(7 * REQUEST_COST_USD)
        assert scrape(text, "gateway_request_duration_seconds_count") == 7
        assert scrape(text, "gateway_budget_limit_usd", budget=budget_id, owner="mp-team") == 100
        pids = {path.name for path in (tmp_path / "prometheus").iterdir()}
        assert len({name.rsplit("_", 1)[-1] for name in pids}) >= 2  # files of both workers
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            worker.wait(20)
