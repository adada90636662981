"""Alert channels against a local HTTP receiver and Django's in-memory mail outbox."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.core.mail import EmailMessage

from governance.models import AuditEvent
from telemetry import channels
from telemetry.models import AlertChannel
from tests import factories
from tests.fakes.webhook_receiver import DROP, WebhookReceiver

pytestmark = pytest.mark.django_db
TOKEN = "T000/B000/s3cr3t-webhook-token"
PAYLOAD: dict[str, Any] = {
    "type": "budget.threshold",
    "title": 'Team "ml" at 80% of its monthly budget',
    "message": 'Team "ml" has spent $812.40 of its monthly budget of $1,000.00 (81%).',
    "organization": {"id": 1, "name": "acme", "timezone": "Europe/Berlin"},
    "scope": "team",
    "owner": {"id": 7, "name": "ml"},
    "period": {"label": "2026-11"},
    "threshold_percent": 80,
    "spent_display": "$812.40",
    "limit_display": "$1,000.00",
    "forecast": None,
    "alert_id": 42,
}


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    server = WebhookReceiver().start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(channels, "RETRY_BACKOFF_SECONDS", (0.0, 0.0))


def channel(kind: str, target: str) -> AlertChannel:
    return AlertChannel(organization_id=1, name=f"{kind}-channel", kind=kind, target=target)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_webhook_posts_the_payload_as_json(receiver: WebhookReceiver) -> None:
    result = channels.deliver(channel("webhook", receiver.url(f"/hooks/{TOKEN}")), PAYLOAD)

    assert result.ok and result.attempts == 1
    [request] = receiver.requests
    assert request.path == f"/hooks/{TOKEN}"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["user-agent"].startswith("claude-gateway-alerts/")
    assert request.json() == PAYLOAD


def test_slack_webhook_gets_text_and_blocks(receiver: WebhookReceiver) -> None:
    result = channels.deliver(channel("slack", receiver.url()), PAYLOAD)

    assert result.ok
    body = receiver.bodies()[0]
    assert body["text"] == PAYLOAD["message"]
    types = [block["type"] for block in body["blocks"]]
    assert types == ["header", "section", "section", "context"]
    assert body["blocks"][0]["text"]["text"] == PAYLOAD["title"]
    fields = [field["text"] for field in body["blocks"][2]["fields"]]
    assert "*Spent*\n$812.40 of $1,000.00" in fields
    assert "*Threshold*\n80%" in fields
    assert "alert #42" in body["blocks"][3]["elements"][0]["text"]


def test_slack_markup_characters_are_escaped() -> None:
    body = channels.slack_body({**PAYLOAD, "message": "a <b> & c"})
    assert body["blocks"][1]["text"]["text"] == "a &lt;b&gt; &amp; c"
    assert body["text"] == "a <b> & c"  # the notification text is plain


def test_email_goes_to_every_address(mailoutbox: list[EmailMessage]) -> None:
    result = channels.deliver(channel("email", "fin@example.com, lead@example.com"), PAYLOAD)

    assert result.ok
    [mail] = mailoutbox
    assert mail.to == ["fin@example.com", "lead@example.com"]
    assert mail.subject == '[claude-gateway] Team "ml" at 80% of its monthly budget'
    assert mail.body.startswith(PAYLOAD["message"])
    assert "Spent: $812.40 of $1,000.00" in mail.body
    assert "Alert #42" in mail.body


def test_server_errors_are_retried_until_the_webhook_answers(receiver: WebhookReceiver) -> None:
    receiver.script(503, DROP)

    result = channels.deliver(channel("webhook", receiver.url()), PAYLOAD)

    assert result.ok and result.attempts == 3
    assert len(receiver.requests) == 3


def test_delivery_gives_up_after_three_attempts(receiver: WebhookReceiver) -> None:
    receiver.script(500, 502, 503, 200)

    result = channels.deliver(channel("webhook", receiver.url()), PAYLOAD)

    assert not result.ok and result.attempts == 3
    assert result.detail.startswith("HTTP 503")


def test_client_errors_are_not_retried(receiver: WebhookReceiver) -> None:
    receiver.script(404)

    result = channels.deliver(channel("webhook", receiver.url()), PAYLOAD)

    assert not result.ok and result.attempts == 1
    assert len(receiver.requests) == 1


def test_connection_failure_is_reported_without_the_url_token() -> None:
    url = f"http://127.0.0.1:{closed_port()}/hooks/{TOKEN}?token=abc123"

    result = channels.deliver(channel("webhook", url), PAYLOAD)

    assert not result.ok and result.attempts == 3
    assert "ConnectError" in result.detail
    assert TOKEN not in result.detail and "abc123" not in result.detail


def test_webhook_urls_are_redacted_to_scheme_and_host() -> None:
    assert channels.redact_url(f"https://hooks.slack.com/services/{TOKEN}") == (
        "https://hooks.slack.com/…"
    )
    assert channels.redact_url("http://127.0.0.1:8080/?key=abc") == "http://127.0.0.1:8080/…"
    assert channels.redact_url("https://example.com") == "https://example.com"
    assert channels.redact_url("not a url") == "(unparsable URL)"


def test_a_non_http_target_is_refused_without_a_request() -> None:
    assert channels.post_json("file:///etc/passwd", PAYLOAD).ok is False


def test_channel_targets_are_validated_per_kind() -> None:
    with pytest.raises(ValidationError) as bad_url:
        channel("slack", f"ftp://hooks.example.com/{TOKEN}").full_clean()
    assert TOKEN not in str(bad_url.value)
    with pytest.raises(ValidationError):
        channel("email", "not-an-address").full_clean()
    channel("email", "a@example.com; b@example.com").full_clean()
    channel("webhook", "https://hooks.example.com/x").full_clean()


def test_saving_a_channel_is_audited_without_its_url_token() -> None:
    org = factories.organization()
    saved = AlertChannel(
        organization_id=org.pk,
        name="finance-slack",
        kind="slack",
        target=f"https://hooks.slack.com/services/{TOKEN}",
    )

    assert channels.save_channel(saved, actor=factories.TEST_ACTOR) is True
    assert channels.save_channel(saved, actor=factories.TEST_ACTOR) is False  # unchanged
    saved.target = "https://hooks.slack.com/services/T000/B000/rotated"
    assert channels.save_channel(saved, actor=factories.TEST_ACTOR) is True
    channels.delete_channel(saved, actor=factories.TEST_ACTOR)

    events = AuditEvent.objects.filter(subject_type="telemetry.AlertChannel").order_by("id")
    assert [e.verb for e in events] == ["created", "updated", "deleted"]
    for event in events:
        assert TOKEN not in str(event.before) + str(event.after)
        assert "rotated" not in str(event.before) + str(event.after)
    created, updated, _ = events
    assert created.after is not None and updated.before is not None and updated.after is not None
    assert created.after["target"] == "https://hooks.slack.com/…"
    assert updated.before["target_sha256"] != updated.after["target_sha256"]
