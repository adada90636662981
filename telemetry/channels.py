"""Alert channels: delivering one alert to a generic JSON webhook, a Slack-compatible webhook
or email, and the audited writes of the channels themselves.

Webhook URLs often carry a token (Slack's always do), so a URL is stored encrypted
(AlertChannel.secret_target) and only ever logged, recorded in a delivery log, shown or audited
reduced to its scheme and host. Right before each POST the URL's host is resolved again and
refused if it now points at a loopback, private or metadata address (governance/outbound.py).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import smtplib
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.mail import send_mail
from django.db import transaction

from governance import guarded_http, outbound
from governance.actors import Actor
from governance.models import AuditEvent
from governance.services import audit
from telemetry.models import AlertChannel

logger = logging.getLogger(__name__)

TIMEOUT = httpx.Timeout(5.0, connect=3.0)
# Pauses between the attempts of one delivery (so 3 attempts); a channel still failing after
# that is retried by the next run of the alert job, with a growing delay (telemetry/alerts.py).
RETRY_BACKOFF_SECONDS: tuple[float, ...] = (0.5, 2.0)
USER_AGENT = "claude-gateway-alerts/1"
EMAIL_SUBJECT_PREFIX = "[claude-gateway] "
_ADDRESS_SPLIT = re.compile(r"[,;\s]+")


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    ok: bool
    detail: str
    attempts: int = 1


# --- delivery ------------------------------------------------------------------------------


def deliver(channel: AlertChannel, payload: Mapping[str, Any]) -> DeliveryResult:
    """Send `payload` (the generic webhook body) through `channel`; never raises."""
    try:
        if channel.kind == AlertChannel.Kind.WEBHOOK:
            return post_json(channel.destination(), dict(payload))
        if channel.kind == AlertChannel.Kind.SLACK:
            return post_json(channel.destination(), slack_body(payload))
        if channel.kind == AlertChannel.Kind.EMAIL:
            return send_email(channel.target, payload)
    except Exception as exc:  # one broken channel must not stop the others
        # The exception text and traceback may quote the target URL: only the type is logged.
        logger.error("alert channel %s failed: %s", channel.pk, type(exc).__name__)
        return DeliveryResult(False, f"error: {type(exc).__name__}")
    return DeliveryResult(False, f"unknown channel kind {channel.kind!r}")


def post_json(url: str, body: Mapping[str, Any]) -> DeliveryResult:
    """POST `body` as JSON, retrying connection errors, 429 and 5xx a few times."""
    if urlsplit(url).scheme not in ("http", "https"):
        return DeliveryResult(False, "not an http(s) URL")
    content = json.dumps(body, ensure_ascii=False).encode()
    headers = {"content-type": "application/json", "user-agent": USER_AGENT}
    pauses = (*RETRY_BACKOFF_SECONDS, None)
    with httpx.Client(
        timeout=TIMEOUT,
        headers=headers,
        follow_redirects=False,
        transport=guarded_http.guarded_transport(),
    ) as client:
        for attempt, pause in enumerate(pauses, start=1):
            ok, retryable, detail = _post_once(client, url, content)
            if ok or not retryable or pause is None:
                return DeliveryResult(ok, detail, attempt)
            time.sleep(pause)
    raise AssertionError("unreachable")  # pragma: no cover


def _post_once(client: httpx.Client, url: str, content: bytes) -> tuple[bool, bool, str]:
    """One POST: (delivered, worth retrying, what happened)."""
    try:
        # The name may point elsewhere than when the channel was saved (DNS rebinding): the
        # transport checks the addresses it connects to (governance/guarded_http.py).
        response = client.post(url, content=content)
    except outbound.ForbiddenDestination as exc:
        reason = "; ".join(exc.messages)  # names the address, never the URL
        logger.warning("alert webhook refused: %s", reason)
        return False, False, f"refused: {reason}"[:300]
    except httpx.TransportError as exc:
        text = redact_text(str(exc), url)
        return False, True, f"{type(exc).__name__}: {text}"[:300]
    status = response.status_code
    if 200 <= status < 300:
        return True, False, f"HTTP {status}"
    snippet = redact_text(response.text[:200], url)
    return False, status == 429 or status >= 500, f"HTTP {status}: {snippet}".rstrip(": ")


def send_email(target: str, payload: Mapping[str, Any]) -> DeliveryResult:
    recipients = email_addresses(target)
    if not recipients:
        return DeliveryResult(False, "no email address")
    subject = EMAIL_SUBJECT_PREFIX + str(payload.get("title") or "Budget alert")
    try:
        send_mail(
            subject,
            email_body(payload),
            settings.DEFAULT_FROM_EMAIL,
            recipients,
            fail_silently=False,
        )
    except (smtplib.SMTPException, OSError) as exc:
        return DeliveryResult(False, f"{type(exc).__name__}: {exc}"[:300])
    return DeliveryResult(True, f"sent to {len(recipients)} address(es)")


def email_addresses(target: str) -> list[str]:
    return [address for address in _ADDRESS_SPLIT.split(target) if address]


# --- message bodies ------------------------------------------------------------------------


def slack_body(payload: Mapping[str, Any]) -> dict[str, Any]:
    """A Slack incoming-webhook message: `text` for notifications, `blocks` for the layout."""
    message = str(payload.get("message", ""))
    blocks: list[dict[str, Any]] = [
        {
            "type": "header",
            "text": {"type": "plain_text", "text": str(payload.get("title", "Budget alert"))[:150]},
        },
        {"type": "section", "text": {"type": "mrkdwn", "text": slack_escape(message)}},
    ]
    fields = [
        {"type": "mrkdwn", "text": f"*{slack_escape(label)}*\n{slack_escape(value)}"}
        for label, value in summary_lines(payload)
    ]
    if fields:
        blocks.append({"type": "section", "fields": fields[:10]})
    if payload.get("alert_id"):
        context = f"claude-gateway · alert #{payload['alert_id']}"
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": context}]})
    return {"text": message, "blocks": blocks}


def slack_escape(text: str) -> str:
    """Slack's mrkdwn reserves &, < and > for its own markup."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def email_body(payload: Mapping[str, Any]) -> str:
    lines = [str(payload.get("message", "")), ""]
    lines += [f"{label}: {value}" for label, value in summary_lines(payload)]
    if payload.get("alert_id"):
        lines += ["", f"Alert #{payload['alert_id']} from the Claude gateway."]
    return "\n".join(lines) + "\n"


def summary_lines(payload: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The figures of an alert as (label, value) lines, for Slack fields and email."""
    lines: list[tuple[str, str]] = []
    organization = payload.get("organization") or {}
    owner = payload.get("owner") or {}
    period = payload.get("period") or {}
    if organization.get("name"):
        lines.append(("Organization", str(organization["name"])))
    if owner.get("name"):
        lines.append(("Budget owner", f'{payload.get("scope", "")} "{owner["name"]}"'.strip()))
    if period.get("label"):
        lines.append(("Period", f"{period['label']} ({organization.get('timezone', 'UTC')})"))
    if "spent_display" in payload:
        lines.append(("Spent", f"{payload['spent_display']} of {payload['limit_display']}"))
    if payload.get("threshold_percent"):
        lines.append(("Threshold", f"{payload['threshold_percent']}%"))
    forecast = payload.get("forecast") or {}
    if forecast.get("exhaustion_date"):
        lines.append(("Forecast exhaustion", str(forecast["exhaustion_date"])))
    return lines


# --- redaction -----------------------------------------------------------------------------


def redact_url(url: str) -> str:
    """`https://hooks.slack.com/…`: the path and query of a webhook URL may be its secret."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "(unparsable URL)"
    if not parts.scheme or not host:
        return "(unparsable URL)"
    tail = "/…" if parts.path not in ("", "/") or parts.query else ""
    return f"{parts.scheme}://{host}{port}{tail}"


def redact_text(text: str, url: str) -> str:
    """`text` with the URL, and its path and query on their own, replaced by the redacted URL."""
    parts = urlsplit(url)
    secrets = [url, parts.path + ("?" + parts.query if parts.query else ""), parts.query]
    for secret in sorted(filter(None, secrets), key=len, reverse=True):
        if len(secret) > 1:
            text = text.replace(secret, redact_url(url))
    return text


def describe_target(channel: AlertChannel) -> str:
    if not channel.is_webhook:
        return channel.target
    try:
        url = channel.destination()
    except ImproperlyConfigured:
        return "(set, but cannot be decrypted: GATEWAY_ENCRYPTION_KEY changed?)"
    return redact_url(url) if url else "(not set)"


# --- audited writes ------------------------------------------------------------------------


def audit_view(channel: AlertChannel) -> dict[str, Any]:
    """What the audit trail keeps of a channel: the target redacted, plus a short fingerprint
    so that a changed token still shows as a change."""
    try:
        secret = channel.destination()
    except ImproperlyConfigured:
        secret = channel.secret_target  # still tells a replaced URL from the old one
    fingerprint = hashlib.sha256(secret.encode()).hexdigest()[:12]
    return {
        "organization_id": channel.organization_id,
        "name": channel.name,
        "kind": channel.kind,
        "target": describe_target(channel),
        "target_sha256": fingerprint,
        "enabled": channel.enabled,
    }


def save_channel(channel: AlertChannel, *, actor: Actor) -> bool:
    """Validate and save a channel if it changed, with an audit event. Returns whether it wrote."""
    with transaction.atomic():
        before = None
        if channel.pk is not None:
            stored = AlertChannel.objects.select_for_update().filter(pk=channel.pk).first()
            before = audit_view(stored) if stored is not None else None
        channel.full_clean()
        after = audit_view(channel)
        if before is not None and before == after:
            return False
        channel.save()
        verb = AuditEvent.Verb.UPDATED if before else AuditEvent.Verb.CREATED
        audit.record(actor=actor, verb=verb, subject=channel, before=before, after=after)
    return True


def delete_channel(channel: AlertChannel, *, actor: Actor) -> None:
    with transaction.atomic():
        before = audit_view(channel)
        subject_id, subject_repr = str(channel.pk), str(channel)
        channel.delete()
        audit.record(
            actor=actor,
            verb=AuditEvent.Verb.DELETED,
            subject_type=AlertChannel._meta.label,
            subject_id=subject_id,
            subject_repr=subject_repr,
            before=before,
        )
