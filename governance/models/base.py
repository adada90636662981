from __future__ import annotations

from django.db import models


class TimestampedModel(models.Model):
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        abstract = True


def owner_scope(*, virtual_key_id: int | None, team_id: int | None, project_id: int | None) -> str:
    """Which level owns a row that an organization, project, team or key may own (budgets, tool
    grants): the most specific one set."""
    if virtual_key_id is not None:
        return "key"
    if team_id is not None:
        return "team"
    if project_id is not None:
        return "project"
    return "organization"
