from __future__ import annotations

from django.db import models


class SpendRollup(models.Model):
    """Spend, tokens and requests per hour or day and per (org, team, project, key, model,
    provider). Dashboards and reports read these, never full scans of the ledger.

    Missing dimensions are stored as 0 / "" rather than NULL so the unique constraint (and
    an upsert on it) works on every database.
    """

    class Granularity(models.TextChoices):
        HOUR = "hour"
        DAY = "day"

    granularity = models.CharField(max_length=4, choices=Granularity.choices)
    bucket_start = models.DateTimeField()
    organization_id = models.BigIntegerField(default=0)
    team_id = models.BigIntegerField(default=0)
    project_id = models.BigIntegerField(default=0)
    key_id = models.BigIntegerField(default=0)
    model = models.CharField(max_length=200, default="")
    provider = models.CharField(max_length=100, default="")
    requests = models.BigIntegerField(default=0)
    errors = models.BigIntegerField(default=0)
    input_tokens = models.BigIntegerField(default=0)
    output_tokens = models.BigIntegerField(default=0)
    cache_read_tokens = models.BigIntegerField(default=0)
    cache_write_tokens = models.BigIntegerField(default=0)
    cost_micros = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=[
                    "granularity",
                    "bucket_start",
                    "organization_id",
                    "team_id",
                    "project_id",
                    "key_id",
                    "model",
                    "provider",
                ],
                name="rollup_unique_cell",
            )
        ]
        indexes = [
            models.Index(
                fields=["granularity", "organization_id", "bucket_start"], name="rollup_org_time"
            ),
            models.Index(
                fields=["granularity", "team_id", "bucket_start"], name="rollup_team_time"
            ),
            models.Index(fields=["granularity", "key_id", "bucket_start"], name="rollup_key_time"),
        ]

    def __str__(self) -> str:
        return f"{self.granularity} {self.bucket_start:%Y-%m-%d %H:%M} org {self.organization_id}"


class SessionRollup(models.Model):
    """One line per Claude Code session and day: an agent-team run shows with its cost."""

    day = models.DateField()
    session_id = models.CharField(max_length=100)
    organization_id = models.BigIntegerField(default=0)
    team_id = models.BigIntegerField(default=0)
    key_id = models.BigIntegerField(default=0)
    requests = models.BigIntegerField(default=0)
    agents = models.IntegerField(default=0, help_text="Distinct subagents seen.")
    input_tokens = models.BigIntegerField(default=0)
    output_tokens = models.BigIntegerField(default=0)
    cache_read_tokens = models.BigIntegerField(default=0)
    cache_write_tokens = models.BigIntegerField(default=0)
    cost_micros = models.BigIntegerField(default=0)
    first_seen = models.DateTimeField()
    last_seen = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["day", "session_id", "key_id"], name="session_rollup_unique"
            )
        ]
        indexes = [models.Index(fields=["organization_id", "day"], name="session_org_day")]

    def __str__(self) -> str:
        return f"session {self.session_id} on {self.day}"


class RollupCursor(models.Model):
    """How far the rollup job has read the ledger (by id), so late rows are rolled up too."""

    name = models.CharField(max_length=50, unique=True)
    last_usage_id = models.BigIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.name} at {self.last_usage_id}"
