from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q

from governance.models.base import TimestampedModel, owner_scope
from governance.models.keys import VirtualKey
from governance.models.orgs import Organization, Project, Team
from governance.validators import validate_pattern_list, validate_thresholds

DEFAULT_ALERT_THRESHOLDS = [50, 80, 100]


def default_alert_thresholds() -> list[int]:
    return list(DEFAULT_ALERT_THRESHOLDS)


class Budget(TimestampedModel):
    """A spending ceiling on an organization, team, project or key.

    With `model_patterns` (e.g. ["claude-opus-*"]) or `provider_names` it applies only to
    matching requests: a model-tier or provider budget. Amounts are integer micro-dollars.
    """

    class Period(models.TextChoices):
        DAY = "day"
        WEEK = "week"
        MONTH = "month"
        QUARTER = "quarter"
        LIFETIME = "lifetime"

    class OnExhaust(models.TextChoices):
        BLOCK = "block", "Block requests"
        DOWNGRADE = "downgrade", "Downgrade to another model"
        ALERT = "alert", "Alert only"

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="budgets")
    team = models.ForeignKey(
        Team, on_delete=models.CASCADE, null=True, blank=True, related_name="budgets"
    )
    project = models.ForeignKey(
        Project, on_delete=models.CASCADE, null=True, blank=True, related_name="budgets"
    )
    virtual_key = models.ForeignKey(
        VirtualKey, on_delete=models.CASCADE, null=True, blank=True, related_name="budgets"
    )
    amount_micros = models.BigIntegerField(help_text="Limit in micro-dollars (1 USD = 1,000,000).")
    period = models.CharField(max_length=10, choices=Period.choices, default=Period.MONTH)
    model_patterns = models.JSONField(default=list, blank=True, validators=[validate_pattern_list])
    provider_names = models.JSONField(default=list, blank=True, validators=[validate_pattern_list])
    alert_thresholds = models.JSONField(
        default=default_alert_thresholds, blank=True, validators=[validate_thresholds]
    )
    on_exhaust = models.CharField(max_length=10, choices=OnExhaust.choices, default=OnExhaust.BLOCK)
    downgrade_model = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["organization__name", "period", "id"]
        constraints = [
            models.CheckConstraint(
                condition=~Q(team__isnull=False, project__isnull=False)
                & ~Q(team__isnull=False, virtual_key__isnull=False)
                & ~Q(project__isnull=False, virtual_key__isnull=False),
                name="budget_single_owner",
            ),
            models.CheckConstraint(
                condition=Q(amount_micros__gte=0), name="budget_amount_positive"
            ),
            models.CheckConstraint(
                condition=~Q(on_exhaust="downgrade") | ~Q(downgrade_model=""),
                name="budget_downgrade_has_model",
            ),
        ]

    def __str__(self) -> str:
        tier = f" {','.join(self.model_patterns)}" if self.model_patterns else ""
        return f"{self.scope_label}: {self.period}{tier}"

    def clean(self) -> None:
        if self.on_exhaust == self.OnExhaust.DOWNGRADE and not self.downgrade_model:
            raise ValidationError({"downgrade_model": "a downgrade budget needs the model to use"})
        if self.on_exhaust != self.OnExhaust.DOWNGRADE and self.downgrade_model:
            raise ValidationError({"downgrade_model": "only a downgrade budget names a model"})
        owners = [self.team_id, self.project_id, self.virtual_key_id]
        if sum(owner is not None for owner in owners) > 1:
            raise ValidationError(
                "a budget belongs to one team, project or key (or to the organization)"
            )
        for owner in (self.team, self.project, self.virtual_key):
            if owner is not None and owner.organization_id != self.organization_id:
                raise ValidationError("the budget's owner belongs to another organization")

    @property
    def scope(self) -> str:
        return owner_scope(
            virtual_key_id=self.virtual_key_id, team_id=self.team_id, project_id=self.project_id
        )

    @property
    def scope_label(self) -> str:
        owner = self.virtual_key or self.team or self.project or self.organization
        return f'{self.scope} "{owner}"'
