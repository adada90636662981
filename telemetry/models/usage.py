from __future__ import annotations

from django.db import models


class UsageRecord(models.Model):
    """One proxied request: the ledger, the truth that counters and rollups are rebuilt from.

    Ids are plain integers (no foreign keys) so ledger rows outlive the governance objects they
    name and a batch insert never waits on locks of the governance tables.
    """

    request_id = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(db_index=True)
    organization_id = models.BigIntegerField(null=True)
    team_id = models.BigIntegerField(null=True, blank=True)
    project_id = models.BigIntegerField(null=True, blank=True)
    key_id = models.BigIntegerField(null=True, blank=True)
    parent_key_id = models.BigIntegerField(null=True, blank=True)
    key_name = models.CharField(max_length=100, blank=True)
    route = models.CharField(max_length=40, default="anthropic.messages")
    requested_model = models.CharField(max_length=200, blank=True)
    routed_model = models.CharField(
        max_length=200, blank=True, help_text="Public model the request was governed as."
    )
    served_model = models.CharField(max_length=200, blank=True)
    provider = models.CharField(max_length=100, blank=True)
    status = models.PositiveSmallIntegerField()
    error_type = models.CharField(max_length=60, blank=True)
    error_message = models.CharField(
        max_length=300, blank=True, help_text="What went wrong, for failed requests."
    )
    input_tokens = models.BigIntegerField(default=0)
    output_tokens = models.BigIntegerField(default=0)
    cache_read_tokens = models.BigIntegerField(default=0)
    cache_write_5m_tokens = models.BigIntegerField(default=0)
    cache_write_1h_tokens = models.BigIntegerField(default=0)
    cost_micros = models.BigIntegerField(default=0)
    billing = models.CharField(
        max_length=12,
        blank=True,
        help_text='"subscription": covered by the developer\'s Claude subscription; empty: API.',
    )
    list_cost_micros = models.BigIntegerField(
        default=0,
        help_text="Subscription requests: their list price (showback), whether or not it counts.",
    )
    cost_estimated = models.BooleanField(
        default=False,
        help_text="Priced by the organization's fallback model: the served model had no price.",
    )
    latency_ms = models.PositiveIntegerField(default=0)
    ttfb_ms = models.PositiveIntegerField(null=True, blank=True)
    stream = models.BooleanField(default=False)
    attempts = models.PositiveSmallIntegerField(default=1)
    attempt_log = models.TextField(
        blank=True,
        help_text=(
            "JSON list of the upstream attempts (provider, model, status, latency_ms, error) "
            "when there was more than one or the only one failed."
        ),
    )
    downgraded_from = models.CharField(max_length=200, blank=True)
    client_disconnected = models.BooleanField(default=False)
    upstream_request_id = models.CharField(max_length=100, blank=True)
    session_id = models.CharField(max_length=100, blank=True)
    agent_id = models.CharField(max_length=100, blank=True)
    parent_agent_id = models.CharField(max_length=100, blank=True)
    client_name = models.CharField(max_length=60, blank=True)
    client_version = models.CharField(max_length=40, blank=True)
    # MCP tool calls (route "mcp.tool", provider "mcp:<server>"): which tool, and how big its
    # result was (what a per-kilobyte price counts).
    tool_server = models.CharField(max_length=64, blank=True)
    tool_name = models.CharField(max_length=128, blank=True)
    result_bytes = models.BigIntegerField(default=0)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["organization_id", "created_at"], name="usage_org_time"),
            models.Index(fields=["team_id", "created_at"], name="usage_team_time"),
            models.Index(fields=["project_id", "created_at"], name="usage_project_time"),
            models.Index(fields=["key_id", "created_at"], name="usage_key_time"),
            models.Index(fields=["parent_key_id", "created_at"], name="usage_parent_time"),
            models.Index(fields=["session_id", "created_at"], name="usage_session_time"),
            # The admin's warning about estimated costs reads only these rows (few, or none).
            models.Index(
                fields=["created_at"],
                name="usage_estimated_time",
                condition=models.Q(cost_estimated=True),
            ),
        ]

    def __str__(self) -> str:
        if self.tool_name:
            return f"{self.request_id} {self.tool_server}/{self.tool_name} {self.status}"
        return f"{self.request_id} {self.served_model or self.requested_model} {self.status}"
