"""Alert channels against a local HTTP receiver and Django's in-memory mail outbox."""

from __future__ import annotations

import importlib
import json
import logging
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.core.mail import EmailMessage
from django.db import connection
from django.db.migrations.loader import MigrationLoader
from django.test import Client
from django.utils import timezone

from governance import crypto
from governance.models import AuditEvent
from telemetry import alerts, channels
from telemetry.models import AlertChannel, AlertEvent
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


# --- webhook URLs are secrets: encrypted at rest, write-only in the admin ---------------------


def saved_channel(kind: str, target: str, name: str = "") -> AlertChannel:
    org = factories.organization()
    channel = AlertChannel(organization_id=org.pk, name=name or kind, kind=kind, target=target)
    channels.save_channel(channel, actor=factories.TEST_ACTOR)
    return AlertChannel.objects.get(pk=channel.pk)


def test_a_webhook_url_is_stored_encrypted(receiver: WebhookReceiver) -> None:
    url = receiver.url(f"/hooks/{TOKEN}")

    row = saved_channel("slack", url)

    assert row.target == ""
    assert TOKEN not in row.secret_target and "127.0.0.1" not in row.secret_target
    assert crypto.decrypt_credentials(row.secret_target) == {"url": url}
    assert channels.deliver(row, PAYLOAD).ok
    assert receiver.requests[0].path == f"/hooks/{TOKEN}"


def test_email_targets_stay_plain() -> None:
    row = saved_channel("email", "fin@example.com")

    assert (row.target, row.secret_target) == ("fin@example.com", "")


def test_saving_again_with_a_blank_target_keeps_the_stored_url(receiver: WebhookReceiver) -> None:
    row = saved_channel("webhook", receiver.url(f"/hooks/{TOKEN}"))
    row.enabled = False

    channels.save_channel(row, actor=factories.TEST_ACTOR)

    after = AlertChannel.objects.get(pk=row.pk)
    assert after.enabled is False
    assert after.destination() == receiver.url(f"/hooks/{TOKEN}")


def test_the_admin_shows_a_stored_webhook_url_only_as_set_and_its_host(
    admin_client: Client, receiver: WebhookReceiver
) -> None:
    org = factories.organization()
    form = {"organization": org.pk, "name": "finance", "kind": "slack", "enabled": "on"}
    added = admin_client.post(
        "/admin/telemetry/alertchannel/add/", {**form, "target": receiver.url(f"/h/{TOKEN}")}
    )
    assert added.status_code == 302, added.content.decode()[:2000]
    channel = AlertChannel.objects.get(name="finance")
    change_url = f"/admin/telemetry/alertchannel/{channel.pk}/change/"

    page = admin_client.get(change_url).content.decode()
    kept = admin_client.post(change_url, {**form, "target": ""})
    rotated = admin_client.post(change_url, {**form, "target": receiver.url("/h/rotated")})

    assert TOKEN not in page and channel.secret_target not in page
    assert f"set ({receiver.base_url}/…)" in page
    assert kept.status_code == 302
    assert rotated.status_code == 302
    assert AlertChannel.objects.get(pk=channel.pk).destination() == receiver.url("/h/rotated")


def test_a_url_typed_into_the_form_is_not_rendered_back_after_an_error(
    admin_client: Client,
) -> None:
    response = admin_client.post(
        "/admin/telemetry/alertchannel/add/",
        {"name": "no-org", "kind": "slack", "target": f"https://hooks.example.com/{TOKEN}"},
    )

    assert response.status_code == 200  # no organization chosen
    assert TOKEN not in response.content.decode()


def test_the_data_migration_encrypts_existing_webhook_urls() -> None:
    migration = importlib.import_module("telemetry.migrations.0006_alert_channel_secret_target")
    state = MigrationLoader(connection).project_state(
        ("telemetry", "0006_alert_channel_secret_target")
    )
    Historical = state.apps.get_model("telemetry", "AlertChannel")
    slack = Historical.objects.create(
        organization_id=1, name="s", kind="slack", target=f"https://hooks.slack.com/{TOKEN}"
    )
    email = Historical.objects.create(organization_id=1, name="e", kind="email", target="a@b.co")

    migration.encrypt_urls(state.apps, None)

    slack_row, email_row = (
        AlertChannel.objects.get(pk=slack.pk),
        AlertChannel.objects.get(pk=email.pk),
    )
    assert slack_row.target == "" and TOKEN not in slack_row.secret_target
    assert slack_row.destination() == f"https://hooks.slack.com/{TOKEN}"
    assert (email_row.target, email_row.secret_target) == ("a@b.co", "")
    migration.decrypt_urls(state.apps, None)
    assert AlertChannel.objects.get(pk=slack.pk).target == f"https://hooks.slack.com/{TOKEN}"


# --- outbound guard: no webhook to loopback, private or metadata addresses ---------------------


@pytest.fixture
def no_allow_list(settings: Any) -> None:
    settings.GATEWAY_OUTBOUND_ALLOWED_NETWORKS = []


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "169.254.169.254", "10.0.0.1", "localhost", "[::1]", "100.64.0.1"]
)
def test_a_webhook_on_a_non_public_address_is_refused(no_allow_list: None, host: str) -> None:
    with pytest.raises(ValidationError) as refused:
        channel("webhook", f"http://{host}/hooks/{TOKEN}").full_clean()

    assert "GATEWAY_OUTBOUND_ALLOWED_NETWORKS" in str(refused.value.message_dict["target"])
    assert TOKEN not in str(refused.value)


def test_a_webhook_host_that_does_not_resolve_is_accepted_and_checked_when_sent() -> None:
    # Resolving may need the production network; every send resolves and checks again.
    channel("slack", f"https://hooks.slack.invalid/services/{TOKEN}").full_clean()


def test_a_webhook_rebound_to_a_forbidden_address_is_refused_when_sent(
    receiver: WebhookReceiver, settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    row = saved_channel("webhook", receiver.url(f"/hooks/{TOKEN}"))
    settings.GATEWAY_OUTBOUND_ALLOWED_NETWORKS = []  # as if the name now pointed inside

    with caplog.at_level(logging.WARNING, logger="telemetry.channels"):
        result = channels.deliver(row, PAYLOAD)

    assert not result.ok and result.attempts == 1  # refused, not retried
    assert result.detail.startswith("refused: 127.0.0.1 is a loopback")
    assert receiver.requests == []
    assert "alert webhook refused" in caplog.text
    assert TOKEN not in caplog.text + result.detail and "/hooks/" not in caplog.text


def test_a_name_rebound_between_the_check_and_the_connection_reaches_only_the_checked_address(
    receiver: WebhookReceiver, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DNS rebinding: the webhook's name answers an allowed address once, then a forbidden one.
    The alert must reach the address that was checked, never the one the name answers next."""
    port = int(receiver.base_url.rsplit(":", 1)[1])
    inside = WebhookReceiver("127.0.0.3", port).start()  # same port, forbidden address
    try:
        row = saved_channel("webhook", f"http://rebound.test:{port}/hooks/{TOKEN}")
        settings.GATEWAY_OUTBOUND_ALLOWED_NETWORKS = ["127.0.0.1/32"]
        answers = iter(["127.0.0.1"])  # then 127.0.0.3 for every later lookup
        real_getaddrinfo = socket.getaddrinfo

        def rebinding_getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
            name = host.decode() if isinstance(host, bytes) else host
            if name != "rebound.test":
                return real_getaddrinfo(host, *args, **kwargs)
            address = next(answers, "127.0.0.3")
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]

        monkeypatch.setattr(socket, "getaddrinfo", rebinding_getaddrinfo)
        result = channels.deliver(row, PAYLOAD)
    finally:
        inside.stop()

    assert result.ok, result.detail
    assert len(receiver.requests) == 1
    assert inside.requests == []


def test_a_refused_send_is_a_failed_delivery_of_the_alert(
    receiver: WebhookReceiver, settings: Any
) -> None:
    row = saved_channel("slack", receiver.url(f"/hooks/{TOKEN}"))
    event = AlertEvent.objects.create(
        budget_id=1,
        organization_id=row.organization_id,
        period_label="2026-11",
        kind="threshold",
        threshold_percent=80,
        spent_micros=812_400_000,
        limit_micros=1_000_000_000,
        message=PAYLOAD["message"],
        payload=PAYLOAD,
    )
    settings.GATEWAY_OUTBOUND_ALLOWED_NETWORKS = []
    now = timezone.now()

    assert alerts.claim(event.pk, now=now)
    assert alerts.deliver_event(event.pk, now=now) == 0

    event.refresh_from_db()
    assert event.delivered_at is None and event.next_attempt_at is not None  # retried later
    [entry] = event.delivery_log
    assert entry["ok"] is False and entry["detail"].startswith("refused: ")
    assert TOKEN not in json.dumps(event.delivery_log)
    assert receiver.requests == []
