"""Datadog export against a local fake intake that checks headers, payload shape and size."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import count
from typing import Any

import httpx
import pytest
from django.utils import timezone

from telemetry import ledger, periods
from telemetry.exporters import datadog
from telemetry.models import RollupCursor
from tests import factories

pytestmark = pytest.mark.django_db

API_KEY = "dd-test-api-key-0123456789abcdef"
_request_ids = count(1)


@dataclass
class Answer:
    status: int = 202
    retry_after: str | None = None


@dataclass
class FakeIntake:
    """Datadog's series intake on 127.0.0.1: validates like the real one, answers as told."""

    answers: deque[Answer] = field(default_factory=deque)
    bodies: list[bytes] = field(default_factory=list)  # every POST, accepted or not
    accepted: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    @property
    def base_url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> FakeIntake:
        intake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                intake.bodies.append(body)
                status, payload = intake.check(self.path, self.headers, body)
                answer = intake.answers.popleft() if intake.answers else Answer()
                if status == 202:
                    status = answer.status
                if status == 202:
                    intake.accepted.append(payload)
                data = json.dumps({"errors": [] if status == 202 else ["refused"]}).encode()
                self.send_response(status)
                if answer.retry_after is not None:
                    self.send_header("retry-after", answer.retry_after)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def check(self, path: str, headers: Any, body: bytes) -> tuple[int, dict[str, Any]]:
        if path != "/api/v2/series":
            return self.problem(404, f"path {path}")
        if headers.get("DD-API-KEY") != API_KEY:
            return self.problem(403, "api key")
        if headers.get("Content-Type") != "application/json":
            return self.problem(415, "content type")
        if len(body) > 512_000:
            return self.problem(413, f"payload of {len(body)} bytes")
        payload = json.loads(body)
        now = time.time()
        for series in payload["series"]:
            assert isinstance(series["metric"], str) and series["type"] in (0, 1, 2, 3)
            assert all(isinstance(tag, str) and ":" in tag for tag in series["tags"])
            for point in series["points"]:
                assert isinstance(point["timestamp"], int)
                assert now - 3600 < point["timestamp"] < now + 600
                assert isinstance(point["value"], int | float)
            if series["type"] == 1:
                assert series["interval"] >= 1
        return 202, payload

    def problem(self, status: int, what: str) -> tuple[int, dict[str, Any]]:
        self.problems.append(what)
        return status, {}

    def series(self, metric: str) -> list[dict[str, Any]]:
        return [s for p in self.accepted for s in p["series"] if s["metric"] == metric]

    def value(self, metric: str, *tags: str) -> float:
        return sum(  # type: ignore[no-any-return]
            point["value"]
            for s in self.series(metric)
            if set(tags) <= set(s["tags"])
            for point in s["points"]
        )

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


@pytest.fixture
def intake(settings) -> Iterator[FakeIntake]:
    fake = FakeIntake().start()
    settings.DD_API_KEY = API_KEY
    settings.DD_API_URL = fake.base_url
    yield fake
    fake.stop()


class Sleeps(list[float]):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def push(**kwargs: Any) -> datadog.PushResult:
    kwargs.setdefault("settle_seconds", 0)
    kwargs.setdefault("sleep", Sleeps())
    return datadog.push_datadog_metrics(**kwargs)


def usage(**fields: Any) -> dict[str, Any]:
    return {
        "request_id": f"gwreq_dd_{next(_request_ids)}",
        "created_at": timezone.now(),
        "status": 200,
        "served_model": "claude-sonnet-4-6",
        "provider": "anthropic-direct",
        "input_tokens": 100,
        "output_tokens": 10,
        "cache_read_tokens": 1000,
        "cost_micros": 250_000,
        **fields,
    }


@pytest.fixture
def owners() -> dict[str, Any]:
    org = factories.organization(name="dd-org")
    team = factories.team(organization=org, name="ml")
    return {
        "org": org,
        "team": team,
        "k1": factories.virtual_key(team=team, name="alice"),
        "k2": factories.virtual_key(team=team, name="bob"),
    }


def row_for(owners: dict[str, Any], key: str, **fields: Any) -> dict[str, Any]:
    return usage(
        organization_id=owners["org"].pk,
        team_id=owners["team"].pk,
        key_id=owners[key].pk,
        key_name=owners[key].name,
        **fields,
    )


def test_nothing_is_sent_without_an_api_key(settings):
    settings.DD_API_KEY = ""
    assert datadog.push_datadog_metrics().enabled is False


def test_the_site_picks_the_intake_host(settings):
    settings.DD_API_URL = ""
    settings.DD_SITE = "datadoghq.eu"
    assert datadog.intake_url() == "https://api.datadoghq.eu/api/v2/series"


def test_each_ledger_row_is_sent_once_starting_from_the_first_push(intake, owners):
    ledger.write_events([row_for(owners, "k1")])  # before the first push: history, not sent
    assert push().rows == 0
    ledger.write_events(
        [
            row_for(owners, "k1"),
            row_for(owners, "k1", cache_write_5m_tokens=40),
            row_for(owners, "k2", status=529, error_type="overloaded_error", cost_micros=0),
        ]
    )
    result = push()
    assert (result.rows, result.complete, result.payloads) == (3, True, 1)
    alice = ("organization:dd-org", "team:ml", "key:alice", "model:claude-sonnet-4-6")
    assert intake.value("gateway.llm.requests", *alice) == 2
    assert intake.value("gateway.llm.cost_usd", *alice) == 0.5
    assert intake.value("gateway.llm.tokens", *alice, "token_type:input") == 200
    assert intake.value("gateway.llm.tokens", *alice, "token_type:cache_read") == 2000
    assert intake.value("gateway.llm.tokens", *alice, "token_type:cache_write_5m") == 40
    assert intake.value("gateway.llm.errors", "key:bob") == 1
    assert intake.value("gateway.llm.requests", "provider:anthropic-direct") == 3
    [requests] = intake.series("gateway.llm.requests")[:1]
    assert requests["type"] == datadog.COUNT and requests["unit"] == "request"
    assert push().rows == 0  # nothing new: nothing counted twice
    assert intake.value("gateway.llm.requests") == 3
    assert intake.problems == []


def test_budget_utilisation_is_sent_as_gauges(intake, owners):
    budget = factories.budget(owner=owners["team"], amount_micros=2_000_000)
    ledger.write_events([row_for(owners, "k1", cost_micros=500_000)])
    periods.sync_budget_periods(budget_ids=[budget.pk])
    push()
    tags = (f"budget_id:{budget.pk}", "scope:team", "team:ml", "period:month")
    assert intake.value("gateway.budget.utilization", *tags) == 25.0
    assert intake.value("gateway.budget.spent_usd", *tags) == 0.5
    assert intake.value("gateway.budget.limit_usd", *tags) == 2.0
    assert intake.series("gateway.budget.limit_usd")[0]["type"] == datadog.GAUGE


def test_429_and_5xx_are_retried_with_backoff_and_retry_after(intake, owners):
    push()
    ledger.write_events([row_for(owners, "k1")])
    intake.answers.extend([Answer(429, retry_after="3"), Answer(503), Answer(202)])
    sleeps = Sleeps()
    result = push(sleep=sleeps)
    assert result.complete and len(intake.bodies) == 3
    assert sleeps == [3.0, 2.0]  # Retry-After, then exponential backoff (1 s, 2 s, 4 s)
    assert intake.value("gateway.llm.requests") == 1


def test_a_push_that_keeps_failing_is_sent_again_identically(intake, owners):
    push()
    ledger.write_events([row_for(owners, "k1"), row_for(owners, "k2")])
    intake.answers.extend([Answer(202)] + [Answer(500)] * datadog.MAX_ATTEMPTS)
    sleeps = Sleeps()
    small = 600  # bytes: forces one series per payload, so the failure comes halfway
    failed = push(sleep=sleeps, max_bytes=small)
    assert not failed.complete and failed.payloads == 1
    assert sleeps == [1.0, 2.0, 4.0]
    first_try = list(intake.bodies)
    assert len(first_try) == 1 + datadog.MAX_ATTEMPTS
    ledger.write_events([row_for(owners, "k1")])  # arrives meanwhile: waits for the next push
    intake.bodies.clear()
    again = push(max_bytes=small)
    assert again.complete and again.rows == 2
    # The same rows with the same timestamp: the payload that already arrived is resent
    # byte for byte, and Datadog keeps one value per series and timestamp.
    assert intake.bodies[0] == first_try[0]
    assert intake.bodies[1] == first_try[1]
    last = push(max_bytes=small)
    assert last.rows == 1


def test_a_refused_api_key_stops_the_push_and_keeps_the_rows(intake, owners, caplog):
    push()
    ledger.write_events([row_for(owners, "k1")])
    intake.answers.append(Answer(403))
    with caplog.at_level(logging.DEBUG):
        result = push()
    assert not result.complete and len(intake.bodies) == 1  # no retry on 403
    cursor = RollupCursor.objects.get(name=datadog.CURSOR)
    assert push().rows == 1  # still there for the next run
    assert RollupCursor.objects.get(name=datadog.CURSOR).last_usage_id > cursor.last_usage_id
    assert API_KEY not in caplog.text


def test_payloads_stay_under_the_intake_limit(intake):
    series = [
        {
            "metric": "gateway.llm.requests",
            "type": datadog.COUNT,
            "interval": 60,
            "points": [{"timestamp": int(time.time()), "value": index}],
            "tags": [f"key:key-{index:05d}", "team:" + "t" * 150, "model:claude-sonnet-4-6"],
        }
        for index in range(4000)
    ]
    payloads = datadog.split_payloads(series)
    assert len(payloads) > 1
    assert all(len(p) <= datadog.MAX_PAYLOAD_BYTES for p in payloads)
    assert [s for p in payloads for s in json.loads(p)["series"]] == series
    for payload in payloads:
        datadog.post_payload(httpx.Client(), payload)
    assert intake.problems == [] and len(intake.accepted) == len(payloads)


def test_keys_beyond_the_limit_are_tagged_other(intake, owners, settings):
    settings.GATEWAY_METRICS_MAX_KEYS = 1
    push()
    ledger.write_events(
        [row_for(owners, "k1", cost_micros=900_000), row_for(owners, "k2", cost_micros=100_000)]
    )
    push()
    assert intake.value("gateway.llm.requests", "key:alice") == 1
    assert intake.value("gateway.llm.requests", "key:other") == 1
    assert intake.value("gateway.llm.requests", "key:bob") == 0


def test_two_workers_pushing_at_once_send_the_same_points(intake, owners):
    push()
    ledger.write_events([row_for(owners, "k1") for _ in range(5)])
    first = datadog.claim_batch(0)
    second = datadog.claim_batch(0)  # another worker, before the first one finished
    assert (first.start, first.end, first.stamp) == (second.start, second.end, second.stamp)
    # Identical payloads (Datadog keeps one value per series and timestamp), so sending
    # twice counts once.
    payloads = [datadog.split_payloads(datadog.usage_series(b)[0]) for b in (first, second)]
    assert payloads[0] == payloads[1]
    datadog._complete(first)
    datadog._complete(second)
    assert push().rows == 0
