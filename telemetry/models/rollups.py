from __future__ import annotations

from django.db import models


class SpendRollup(models.Model):
    """Spend, tokens and requests per hour or day and per (org, team, project, key, model,
    provider). Dashboards and reports read these, never full scans of the ledger.

    Missing dimensions are stored as 0 / "" rather than NULL so the unique constraint (and
    an upsert on it) works on every database.

    `model` is the model that answered (what dashboards show); `routed_model` (the public model
    the request was governed as) and `parent_key_id` are kept too so that budget spend, which
    matches model tiers on the routed model and counts a key's sub-keys, can be read from cells
    (telemetry.periods). Both follow from the other dimensions almost always, so they add
    hardly any cells.
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
    routed_model = models.CharField(max_length=200, default="")
    parent_key_id = models.BigIntegerField(default=0)
    requests = models.BigIntegerField(default=0)
    errors = models.BigIntegerField(default=0)
    input_tokens = models.BigIntegerField(default=0)
    output_tokens = models.BigIntegerField(default=0)
    cache_read_tokens = models.BigIntegerField(default=0)
    cache_write_tokens = models.BigIntegerField(default=0)
    cost_micros = models.BigIntegerField(default=0)

    class Meta:
        # Every cell the rollup job adds is an insert into each index, so there are few: the
        # unique cell (organization and time first, so it also serves every read of one
        # organization's cells) and day cells by time (reads across organizations).
        constraints = [
            models.UniqueConstraint(
                fields=[
                    "granularity",
                    "organization_id",
                    "bucket_start",
                    "team_id",
                    "project_id",
                    "key_id",
                    "model",
                    "provider",
                    "routed_model",
                    "parent_key_id",
                ],
                name="rollup_unique_cell",
            )
        ]
        indexes = [
            models.Index(
                fields=["bucket_start"],
                condition=models.Q(granularity="day"),
                name="rollup_day_time",
            ),
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


class SessionAgent(models.Model):
    """A subagent seen in a session's daily line: the distinct count in SessionRollup.agents is
    kept additive by counting only agents that are not here yet, without re-reading the ledger
    (which retention may have thinned)."""

    day = models.DateField()
    session_id = models.CharField(max_length=100)
    key_id = models.BigIntegerField(default=0)
    agent_id = models.CharField(max_length=100)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["day", "session_id", "key_id", "agent_id"], name="session_agent_unique"
            )
        ]

    def __str__(self) -> str:
        return f"agent {self.agent_id} of session {self.session_id} on {self.day}"


class RollupCursor(models.Model):
    """How far the rollup job has read the ledger (by id), so late rows are rolled up too."""

    name = models.CharField(max_length=50, unique=True)
    last_usage_id = models.BigIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.name} at {self.last_usage_id}"
