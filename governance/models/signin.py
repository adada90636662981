"""Claude Code's sign-in through the gateway (governance/signin/): what a team's developers
get, the device grants of sign-ins in progress, and the sessions (refresh-token families).

A signed-in developer is governed as a per-developer sub-key (`DeveloperKey`) of their team's
sign-in key, so budgets, limits, model policies, MCP grants and the ledger apply unchanged.
Device grants and sessions live in the database so that any replica answers any poll or
refresh; their secrets (device code, user code, refresh token) are stored as SHA-256 only.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q
from django.utils import timezone

from governance import managed_settings
from governance.models.base import TimestampedModel
from governance.models.keys import VirtualKey
from governance.models.orgs import Organization, Team

SETTINGS_HELP = (
    "Claude Code managed settings (JSON object), e.g. "
    '{"availableModels": ["claude-sonnet-4-6"], "env": {"ANTHROPIC_DEFAULT_OPUS_MODEL": '
    '"claude-opus-4-7"}, "permissions": {"deny": ["Bash(rm -rf:*)"]}}. Empty: none.'
)


def _check_document(document: Any) -> dict[str, Any]:
    """The document as stored: checked and normalized (an empty form field is no document)."""
    if document in (None, "", {}):
        return {}
    try:
        return managed_settings.parse(document)
    except managed_settings.DocumentError as error:
        raise ValidationError({"managed_settings": str(error)}) from None


class OrganizationSignIn(TimestampedModel):
    """The organization's base layer of the managed settings its developers' Claude Code gets."""

    organization = models.OneToOneField(
        Organization, on_delete=models.CASCADE, related_name="signin"
    )
    managed_settings = models.JSONField(default=dict, blank=True, help_text=SETTINGS_HELP)

    class Meta:
        verbose_name = "Claude Code sign-in (organization)"
        verbose_name_plural = "Claude Code sign-in (organizations)"
        ordering = ["organization__name"]

    def __str__(self) -> str:
        return f"Claude Code sign-in of {self.organization}"

    def clean(self) -> None:
        self.managed_settings = _check_document(self.managed_settings)


class TeamSignIn(TimestampedModel):
    """How a team's developers sign in from Claude Code: the team key their sub-keys hang
    under (empty: the team's only active top-level key), and the team's managed settings."""

    team = models.OneToOneField(Team, on_delete=models.CASCADE, related_name="signin")
    signin_key = models.ForeignKey(
        VirtualKey,
        # Deleting the key must not delete the team's managed settings with it: the admin
        # chooses another sign-in key first (and no relation may rewrite a row unaudited).
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="signin_teams",
        verbose_name="sign-in key",
        help_text=(
            "A top-level key of this team: each developer who signs in from Claude Code gets a "
            "sub-key of it. Empty: the team's only active top-level key."
        ),
    )
    managed_settings = models.JSONField(
        default=dict,
        blank=True,
        help_text=SETTINGS_HELP + " Merged over the organization's.",
    )

    class Meta:
        verbose_name = "Claude Code sign-in (team)"
        verbose_name_plural = "Claude Code sign-in (teams)"
        ordering = ["team__organization__name", "team__name"]

    def __str__(self) -> str:
        return f"Claude Code sign-in of team {self.team}"

    def clean(self) -> None:
        self.managed_settings = _check_document(self.managed_settings)
        key = self.signin_key
        if key is None:
            return
        if key.parent_id is not None:
            raise ValidationError({"signin_key": "choose a top-level key: sub-keys hang under it"})
        if key.team_id != self.team_id:
            raise ValidationError({"signin_key": "choose a key of this team"})


class DeviceGrant(models.Model):
    """A sign-in in progress (RFC 8628): created by the device authorization request, signed
    in at the identity provider in the browser, approved for a team (or denied), then redeemed
    once by the polling client."""

    class Status(models.TextChoices):
        PENDING = "pending"
        APPROVED = "approved"
        DENIED = "denied"
        CONSUMED = "consumed"  # redeemed, or its denial reported: never answered again

    device_code_hash = models.CharField(max_length=64, unique=True)
    user_code_hash = models.CharField(max_length=64, db_index=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField(db_index=True)
    interval = models.PositiveSmallIntegerField(default=5)
    last_polled_at = models.DateTimeField(null=True, blank=True)
    # Who signed in at the identity provider (set by the browser leg).
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, null=True, blank=True, related_name="+"
    )
    subject = models.CharField(max_length=255, blank=True)
    email = models.CharField(max_length=254, blank=True)
    groups = models.JSONField(default=list, blank=True)
    # The identity provider's refresh token, encrypted (governance/crypto.py).
    credentials_encrypted = models.TextField(blank=True)
    # What the developer approved.
    team = models.ForeignKey(
        Team, on_delete=models.CASCADE, null=True, blank=True, related_name="+"
    )
    key = models.ForeignKey(
        VirtualKey, on_delete=models.CASCADE, null=True, blank=True, related_name="+"
    )

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"device grant {self.pk} ({self.status})"


class DeveloperKey(TimestampedModel):
    """A developer's sub-key for one team: created at their first sign-in for it, reused by
    every later sign-in. A key the sign-in itself revoked (the developer no longer maps to the
    team, or was switched off) is replaced at their next sign-in; one revoked in the admin
    keeps them out of that team until this row is deleted."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="developer_keys"
    )
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="developer_keys")
    key = models.OneToOneField(VirtualKey, on_delete=models.CASCADE, related_name="developer")
    deprovisioned_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="When the sign-in revoked the key (deprovisioning); a new sign-in replaces it.",
    )

    class Meta:
        verbose_name = "Claude Code developer key"
        ordering = ["team__organization__name", "team__name", "user__username"]
        constraints = [
            models.UniqueConstraint(fields=["user", "team"], name="developer_key_unique")
        ]

    def __str__(self) -> str:
        return f"{self.user} in {self.team}: {self.key}"


class SignInSession(TimestampedModel):
    """A signed-in Claude Code (a refresh-token family): each refresh replaces the refresh
    token; presenting a replaced one again revokes the session (RFC 9700 reuse detection)."""

    public_id = models.CharField(max_length=32, unique=True, editable=False)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="signin_sessions"
    )
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="signin_sessions")
    key = models.ForeignKey(VirtualKey, on_delete=models.CASCADE, related_name="signin_sessions")
    subject = models.CharField(max_length=255)
    email = models.CharField(max_length=254, blank=True)
    groups = models.JSONField(default=list, blank=True)
    refresh_hash = models.CharField(max_length=64, editable=False)
    previous_refresh_hash = models.CharField(max_length=64, blank=True, editable=False)
    rotated_at = models.DateTimeField(null=True, blank=True, editable=False)
    refreshed_at = models.DateTimeField(null=True, blank=True)
    # The identity provider's refresh token, encrypted: each refresh re-reads the groups with it.
    credentials_encrypted = models.TextField(blank=True, editable=False)
    # Without an IdP refresh token the session ends here (GATEWAY_OIDC_SESSION_SECONDS).
    ends_at = models.DateTimeField(null=True, blank=True)
    client = models.CharField(max_length=200, blank=True, help_text="The client's User-Agent.")
    revoked_at = models.DateTimeField(null=True, blank=True)
    revoked_reason = models.CharField(max_length=200, blank=True)

    class Meta:
        verbose_name = "Claude Code session"
        ordering = ["-created_at"]
        indexes = [
            models.Index(
                fields=["user", "team"],
                condition=Q(revoked_at__isnull=True),
                name="signin_session_live",
            )
        ]

    def __str__(self) -> str:
        return f"Claude Code session of {self.user} ({self.team})"

    @property
    def is_active(self) -> bool:
        if self.revoked_at is not None:
            return False
        return self.ends_at is None or self.ends_at > timezone.now()
