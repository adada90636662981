from __future__ import annotations

import zoneinfo

from django.core.exceptions import ValidationError
from django.db import models

from governance.models.base import TimestampedModel


def validate_timezone(value: str) -> None:
    if value not in zoneinfo.available_timezones():
        raise ValidationError(f"{value!r} is not an IANA time zone (e.g. Europe/Berlin).")


class Organization(TimestampedModel):
    """The top of the hierarchy; its time zone defines calendar budget periods."""

    class AdmissionFailMode(models.TextChoices):
        OPEN = "open", "Fail open (serve when the counter store is down)"
        CLOSED = "closed", "Fail closed (refuse when the counter store is down)"

    name = models.SlugField(max_length=100, unique=True)
    display_name = models.CharField(max_length=200, blank=True)
    timezone = models.CharField(max_length=64, default="UTC", validators=[validate_timezone])
    admission_fail_mode = models.CharField(
        max_length=10, choices=AdmissionFailMode.choices, default=AdmissionFailMode.CLOSED
    )

    class UnpricedModels(models.TextChoices):
        REFUSE = "refuse", "Refuse before forwarding (403 naming the missing price)"
        FALLBACK = "fallback", "Serve and price by a fallback model (ledger row marked estimated)"

    class SubscriptionTraffic(models.TextChoices):
        REFUSE = "refuse", "Refuse requests signed in with a Claude subscription"
        SHOWBACK = "showback", "Serve them; record list price for showback, outside budgets"
        BUDGETED = "budgeted", "Serve them; count their list price against budgets"

    log_retention_days = models.PositiveIntegerField(
        default=90, help_text="Days the raw request log is kept; rollups are kept for good."
    )
    unpriced_models = models.CharField(
        max_length=10,
        choices=UnpricedModels.choices,
        default=UnpricedModels.REFUSE,
        help_text="What happens to a request for a routed model that has no price.",
    )
    subscription_traffic = models.CharField(
        max_length=10,
        choices=SubscriptionTraffic.choices,
        default=SubscriptionTraffic.REFUSE,
        help_text=(
            "Claude Code signed in with a Claude Max / Team / Enterprise subscription, sending "
            "its virtual key in x-gateway-key: the token goes to Anthropic untouched."
        ),
    )
    unpriced_fallback_model = models.CharField(
        max_length=200,
        blank=True,
        help_text=(
            "With 'fallback': price unpriced models as this model. Empty: the most expensive "
            "priced model of the same family (e.g. claude-opus-*), else the most expensive of all."
        ),
    )

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Team(TimestampedModel):
    organization = models.ForeignKey(Organization, on_delete=models.PROTECT, related_name="teams")
    name = models.SlugField(max_length=100)
    description = models.CharField(max_length=300, blank=True)

    class Meta:
        ordering = ["organization__name", "name"]
        constraints = [
            models.UniqueConstraint(fields=["organization", "name"], name="team_unique_name")
        ]

    def __str__(self) -> str:
        return f"{self.organization.name}/{self.name}"


class Project(TimestampedModel):
    """A cost centre that cuts across teams: keys of any team can charge to it."""

    organization = models.ForeignKey(
        Organization, on_delete=models.PROTECT, related_name="projects"
    )
    name = models.SlugField(max_length=100)
    description = models.CharField(max_length=300, blank=True)

    class Meta:
        ordering = ["organization__name", "name"]
        constraints = [
            models.UniqueConstraint(fields=["organization", "name"], name="project_unique_name")
        ]

    def __str__(self) -> str:
        return f"{self.organization.name}/{self.name}"
