from __future__ import annotations

from typing import Any

from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.core.validators import URLValidator, validate_email
from django.db import models

from governance import crypto, outbound


class AlertChannel(models.Model):
    """Where an organization's budget alerts go.

    A webhook URL is a secret (Slack's carry their token in the path), so it is kept
    Fernet-encrypted in `secret_target` and `target` holds email addresses only. A URL assigned
    to `target` (by the admin form, or `AlertChannel(kind="slack", target=url)`) is encrypted
    into `secret_target` on save; a blank `target` keeps the stored URL.
    """

    class Kind(models.TextChoices):
        WEBHOOK = "webhook", "Generic JSON webhook"
        SLACK = "slack", "Slack-compatible webhook"
        EMAIL = "email", "Email"

    organization_id = models.BigIntegerField(db_index=True)
    name = models.CharField(max_length=100)
    kind = models.CharField(max_length=10, choices=Kind.choices)
    target = models.CharField(
        max_length=500,
        blank=True,
        help_text="Email addresses. A webhook URL is stored encrypted in secret_target.",
    )
    secret_target = models.TextField(blank=True, default="", editable=False)
    enabled = models.BooleanField(default=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["organization_id", "name"], name="channel_unique_name")
        ]

    def __str__(self) -> str:
        return f"{self.kind}: {self.name}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        self._seal()
        update_fields = kwargs.get("update_fields")
        if update_fields is not None and "target" in update_fields:
            kwargs["update_fields"] = {*update_fields, "secret_target"}
        super().save(*args, **kwargs)

    @property
    def is_webhook(self) -> bool:
        return self.kind in (self.Kind.WEBHOOK, self.Kind.SLACK)

    def destination(self) -> str:
        """The email addresses, or the webhook URL in clear (a URL not saved yet, else the
        stored one). Raises ImproperlyConfigured if the stored URL cannot be decrypted."""
        if self.is_webhook and not self.target:
            return crypto.decrypt_credentials(self.secret_target).get("url", "")
        return self.target

    def clean(self) -> None:
        from telemetry.channels import email_addresses

        if self.kind == self.Kind.EMAIL:
            addresses = email_addresses(self.target)
            if not addresses:
                raise ValidationError({"target": "give one or more email addresses"})
            for address in addresses:
                validate_email(address)
        elif self.is_webhook:
            self._clean_url()

    def _clean_url(self) -> None:
        try:
            url = self.destination()
        except ImproperlyConfigured as exc:
            raise ValidationError({"target": "enter the webhook URL again"}) from exc
        try:
            URLValidator(schemes=["http", "https"])(url)
        except ValidationError as exc:
            # The message would repeat the URL, which may hold a token.
            raise ValidationError({"target": "enter an http(s) webhook URL"}) from exc
        outbound.check_field(url, "target")

    def _seal(self) -> None:
        """Move a URL given in `target` into `secret_target`, encrypted."""
        if not self.is_webhook:
            self.secret_target = ""
        elif self.target:
            self.secret_target = crypto.encrypt_credentials({"url": self.target})
            self.target = ""


class AlertEvent(models.Model):
    """A budget alert, sent once per budget, period, kind and threshold."""

    class Kind(models.TextChoices):
        THRESHOLD = "threshold"
        FORECAST = "forecast"

    budget_id = models.BigIntegerField()
    organization_id = models.BigIntegerField(db_index=True)
    period_label = models.CharField(max_length=20)
    kind = models.CharField(max_length=10, choices=Kind.choices)
    threshold_percent = models.IntegerField(default=0)
    spent_micros = models.BigIntegerField()
    limit_micros = models.BigIntegerField()
    forecast_exhaustion = models.DateTimeField(null=True, blank=True)
    message = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    delivery_log = models.JSONField(default=list, blank=True)
    # Delivery state (telemetry/alerts.py): the body is built once so a retry sends the same
    # alert, and next_attempt_at is both a worker's claim and the time of the next retry.
    payload = models.JSONField(default=dict, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["budget_id", "period_label", "kind", "threshold_percent"],
                name="alert_once_per_period",
            )
        ]
        indexes = [
            models.Index(
                fields=["next_attempt_at"],
                condition=models.Q(delivered_at__isnull=True),
                name="alert_pending",
            )
        ]
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.message[:80]
