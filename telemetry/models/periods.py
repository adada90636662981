from __future__ import annotations

from django.db import models


class BudgetPeriodRecord(models.Model):
    """A budget's spend in one calendar period; final once the period has closed."""

    budget_id = models.BigIntegerField()
    period_label = models.CharField(max_length=20)
    period_start = models.DateTimeField(null=True, blank=True)
    period_end = models.DateTimeField(null=True, blank=True)
    limit_micros = models.BigIntegerField()
    spent_micros = models.BigIntegerField(default=0)
    closed = models.BooleanField(default=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["budget_id", "period_label"], name="period_unique")
        ]
        ordering = ["budget_id", "-period_start"]

    def __str__(self) -> str:
        return f"budget {self.budget_id} {self.period_label}"
