from __future__ import annotations

from django.db import models

from governance.models.base import TimestampedModel
from governance.models.keys import VirtualKey
from governance.models.limits import ONE_OWNER
from governance.models.orgs import Team
from governance.validators import validate_pattern_list


class MCPServer(TimestampedModel):
    name = models.SlugField(max_length=100, unique=True)
    url = models.URLField(max_length=500)
    code_mode = models.BooleanField(
        default=False, help_text="Expose the server's tools through code-mode meta-tools."
    )
    credentials_encrypted = models.TextField(blank=True, editable=False)
    enabled = models.BooleanField(default=True)

    class Meta:
        verbose_name = "MCP server"
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class MCPToolGrant(TimestampedModel):
    """Tools of one MCP server a team or key may list and call (shell patterns)."""

    server = models.ForeignKey(MCPServer, on_delete=models.CASCADE, related_name="grants")
    team = models.ForeignKey(
        Team, on_delete=models.CASCADE, null=True, blank=True, related_name="mcp_grants"
    )
    virtual_key = models.ForeignKey(
        VirtualKey, on_delete=models.CASCADE, null=True, blank=True, related_name="mcp_grants"
    )
    tool_patterns = models.JSONField(default=list, validators=[validate_pattern_list])

    class Meta:
        verbose_name = "MCP tool grant"
        constraints = [
            models.CheckConstraint(condition=ONE_OWNER, name="mcpgrant_single_owner"),
            models.UniqueConstraint(fields=["server", "team"], name="mcpgrant_unique_team"),
            models.UniqueConstraint(fields=["server", "virtual_key"], name="mcpgrant_unique_key"),
        ]

    def __str__(self) -> str:
        return f"{self.virtual_key or self.team} on {self.server.name}"
