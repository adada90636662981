"""The scheduled audit jobs: anchors exported, the chain verified, a break alerted once."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.core.cache import cache
from prometheus_client import generate_latest

from governance.models import AuditEvent
from governance.services import common
from telemetry import audit_watch, channels, exposition, scheduler
from telemetry.models import AlertChannel
from tests import factories
from tests.fakes.webhook_receiver import WebhookReceiver

pytestmark = pytest.mark.django_db


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    server = WebhookReceiver().start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(channels, "RETRY_BACKOFF_SECONDS", (0.0, 0.0))


def add_channel(url: str, *, organization_id: int = 1, enabled: bool = True) -> AlertChannel:
    # Saved directly: the private-address rules for webhook URLs are not what is tested here.
    return AlertChannel.objects.create(
        organization_id=organization_id,
        name=f"hook-{organization_id}-{enabled}",
        kind=AlertChannel.Kind.WEBHOOK,
        target=url,
        enabled=enabled,
    )


def write_events(count: int) -> list[AuditEvent]:
    team = factories.team()
    for index in range(count):
        team.description = f"revision {index}"
        common.save_instance(team, actor=factories.TEST_ACTOR)
    return list(AuditEvent.objects.order_by("id"))


def run(name: str) -> scheduler.Outcome:
    outcome = scheduler.run_job(scheduler.JOBS_BY_NAME[name])
    assert outcome.ok, outcome
    return outcome


def gauge(name: str) -> float | None:
    text = generate_latest(exposition.scrape_registry()).decode()
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def test_the_anchor_job_appends_the_head_to_the_file(settings: Any) -> None:
    events = write_events(2)

    outcome = run("audit_anchor")

    assert outcome.result["appended"] is True
    [line] = Path(settings.GATEWAY_AUDIT_ANCHOR_FILE).read_text().splitlines()
    assert json.loads(line)["hash"] == events[-1].hash


def test_an_intact_chain_alerts_nobody(receiver: WebhookReceiver) -> None:
    write_events(2)
    add_channel(receiver.url())

    outcome = run("audit_verify")

    assert outcome.result["ok"] is True
    assert receiver.requests == []
    assert gauge("gateway_audit_chain_intact") == 1.0


def test_a_break_is_logged_and_alerted_to_every_enabled_channel_once(
    receiver: WebhookReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    events = write_events(3)
    add_channel(receiver.url("/org-1"), organization_id=1)
    add_channel(receiver.url("/org-2"), organization_id=2)
    add_channel(receiver.url("/off"), organization_id=3, enabled=False)
    AuditEvent.objects.filter(pk=events[1].pk).update(actor="someone-else")

    with caplog.at_level(logging.ERROR, logger="gateway.audit"):
        first = run("audit_verify")
        second = run("audit_verify")

    assert (first.result["ok"], first.result["first_bad_id"]) == (False, events[1].pk)
    assert sorted(r.path for r in receiver.requests) == ["/org-1", "/org-2"]
    body = receiver.bodies()[0]
    assert body["kind"] == "audit_chain_broken"
    assert body["first_bad_event_id"] == events[1].pk
    assert "edited" in body["problem"]
    assert second.result["alerted"] == 0
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 2 and f"at event {events[1].pk}" in errors[0].getMessage()
    assert gauge("gateway_audit_chain_intact") == 0.0


def test_a_new_break_alerts_again(receiver: WebhookReceiver) -> None:
    events = write_events(4)
    add_channel(receiver.url())
    AuditEvent.objects.filter(pk=events[3].pk).update(note="forged")
    audit_watch.verify_and_alert()

    AuditEvent.objects.filter(pk=events[1].pk).update(note="forged too")
    audit_watch.verify_and_alert()

    assert [b["first_bad_event_id"] for b in receiver.bodies()] == [events[3].pk, events[1].pk]


def test_a_channel_that_failed_is_retried_at_the_next_check(receiver: WebhookReceiver) -> None:
    events = write_events(2)
    add_channel(receiver.url())
    AuditEvent.objects.filter(pk=events[0].pk).update(note="forged")
    receiver.script(500, 500, 500)

    assert audit_watch.verify_and_alert().alerted == 0
    assert audit_watch.verify_and_alert().alerted == 1
    assert audit_watch.verify_and_alert().alerted == 0
    assert len(receiver.requests) == 4


def test_no_gauge_before_the_first_verification() -> None:
    assert gauge("gateway_audit_chain_intact") is None


def test_a_break_is_alerted_even_with_the_cache_down(
    receiver: WebhookReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    events = write_events(2)
    add_channel(receiver.url())
    AuditEvent.objects.filter(pk=events[0].pk).update(note="forged")

    def down(*args: Any, **kwargs: Any) -> None:
        raise ConnectionError("cache down")

    monkeypatch.setattr(cache, "get", down)
    monkeypatch.setattr(cache, "set", down)

    assert audit_watch.verify_and_alert().alerted == 1
    assert gauge("gateway_audit_chain_intact") is None
