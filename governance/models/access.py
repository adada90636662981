"""Who may do what: gateway roles per organization, and API tokens for automation."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone

from governance.models.base import TimestampedModel
from governance.models.orgs import Organization, Team


class Role(models.TextChoices):
    PLATFORM_ADMIN = "platform_admin", "Platform admin (everything)"
    FINANCE = "finance", "Finance (budgets, prices, spend, alerts; keys read-only)"
    TEAM_LEAD = "team_lead", "Team lead (their teams' keys, budgets, logs and spend)"
    AUDITOR = "auditor", "Auditor (read-only everything, audit log)"


class Membership(TimestampedModel):
    """A user's role in one organization, or in every organization when `organization` is
    empty. A team lead's teams are listed in `teams`. Memberships written by single sign-on
    (`source` "oidc") are replaced at each sign-in from the identity provider's groups."""

    class Source(models.TextChoices):
        MANUAL = "manual"
        OIDC = "oidc", "Single sign-on"

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="gateway_memberships"
    )
    organization = models.ForeignKey(
        Organization,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="memberships",
        help_text="Empty: every organization.",
    )
    role = models.CharField(max_length=20, choices=Role.choices)
    teams = models.ManyToManyField(
        Team, blank=True, related_name="leads", help_text="Team leads: the teams they lead."
    )
    source = models.CharField(max_length=10, choices=Source.choices, default=Source.MANUAL)

    class Meta:
        ordering = ["user__username", "organization__name", "role"]
        constraints = [
            models.UniqueConstraint(
                fields=["user", "organization", "role"], name="membership_unique_role"
            ),
            models.UniqueConstraint(
                fields=["user", "role"],
                condition=models.Q(organization__isnull=True),
                name="membership_unique_global_role",
            ),
        ]

    def __str__(self) -> str:
        where = self.organization.name if self.organization is not None else "all organizations"
        return f"{self.user} — {self.get_role_display().split(' (')[0]} of {where}"


class ApiToken(TimestampedModel):
    """A user's credential for the REST API and the Admin-API-compatible routes: it acts with
    the user's roles. Shown once, stored as a SHA-256 lookup hash and a visible prefix."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens"
    )
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=16, editable=False)
    lookup_hash = models.CharField(max_length=64, unique=True, editable=False)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        verbose_name = "API token"
        ordering = ["user__username", "name"]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def is_active(self) -> bool:
        now = timezone.now()
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > now)
