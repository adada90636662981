from __future__ import annotations

from django.db import models
from django.db.models import Q
from django.utils import timezone

from governance.models.base import TimestampedModel
from governance.models.orgs import Organization, Project, Team


class VirtualKey(TimestampedModel):
    """A developer's or service's credential for the gateway.

    The secret is never stored: only its SHA-256 (`lookup_hash`) and a short visible prefix.
    After a rotation the previous hash stays valid until `previous_valid_until`.
    A sub-key (`parent` set) belongs to its parent's team and project and is held to every
    ceiling of its parent as well as its own.
    """

    organization = models.ForeignKey(
        Organization, on_delete=models.PROTECT, related_name="virtual_keys"
    )
    team = models.ForeignKey(
        Team, on_delete=models.PROTECT, null=True, blank=True, related_name="virtual_keys"
    )
    project = models.ForeignKey(
        Project, on_delete=models.PROTECT, null=True, blank=True, related_name="virtual_keys"
    )
    parent = models.ForeignKey(
        "self", on_delete=models.PROTECT, null=True, blank=True, related_name="sub_keys"
    )
    name = models.CharField(max_length=100)
    owner = models.CharField(
        max_length=200, blank=True, help_text="Person or service, e.g. an email."
    )
    prefix = models.CharField(max_length=16, editable=False)
    lookup_hash = models.CharField(max_length=64, unique=True, editable=False)
    previous_lookup_hash = models.CharField(
        max_length=64, null=True, blank=True, unique=True, editable=False
    )
    previous_valid_until = models.DateTimeField(null=True, blank=True, editable=False)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)
    log_content = models.BooleanField(
        default=False, help_text="Store prompt and reply text in the request log for this key."
    )

    class McpCodeMode(models.TextChoices):
        INHERIT = "inherit", "Each MCP server's own setting"
        ON = "on", "Code Mode for every MCP server"
        OFF = "off", "No Code Mode: the tools themselves"

    mcp_code_mode = models.CharField(
        "MCP Code Mode",
        max_length=7,
        choices=McpCodeMode.choices,
        default=McpCodeMode.INHERIT,
        help_text="Whether this key's MCP tools reach it as Code Mode meta-tools.",
    )

    class Meta:
        ordering = ["organization__name", "name"]
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "name"],
                condition=Q(parent__isnull=True),
                name="key_unique_name_in_org",
            ),
            models.UniqueConstraint(
                fields=["parent", "name"],
                condition=Q(parent__isnull=False),
                name="subkey_unique_name_in_parent",
            ),
        ]

    def __str__(self) -> str:
        if self.parent is not None:
            return f"{self.parent.name}/{self.name}"
        return self.name

    @property
    def is_active(self) -> bool:
        now = timezone.now()
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > now)
