from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q

from governance.models.base import TimestampedModel
from governance.models.keys import VirtualKey
from governance.models.orgs import Team
from governance.validators import validate_overrides, validate_pattern_list

ONE_OWNER = Q(team__isnull=False, virtual_key__isnull=True) | Q(
    team__isnull=True, virtual_key__isnull=False
)


def _check_single_owner(team_id: int | None, key_id: int | None) -> None:
    if (team_id is None) == (key_id is None):
        raise ValidationError("set exactly one owner: a team or a virtual key")


class RateLimit(TimestampedModel):
    """Requests and tokens per minute and concurrent requests, on a team or a key."""

    team = models.OneToOneField(
        Team, on_delete=models.CASCADE, null=True, blank=True, related_name="rate_limit"
    )
    virtual_key = models.OneToOneField(
        VirtualKey, on_delete=models.CASCADE, null=True, blank=True, related_name="rate_limit"
    )
    requests_per_minute = models.PositiveIntegerField(null=True, blank=True)
    tokens_per_minute = models.PositiveIntegerField(null=True, blank=True)
    concurrent = models.PositiveIntegerField(null=True, blank=True)

    class Meta:
        constraints = [models.CheckConstraint(condition=ONE_OWNER, name="ratelimit_single_owner")]

    def __str__(self) -> str:
        return f"rate limit of {self.virtual_key or self.team}"

    def clean(self) -> None:
        _check_single_owner(self.team_id, self.virtual_key_id)
        if not any((self.requests_per_minute, self.tokens_per_minute, self.concurrent)):
            raise ValidationError("set at least one of requests, tokens per minute or concurrency")


class ModelPolicy(TimestampedModel):
    """Which models a team or key may use, and tier overrides (pattern -> model).

    Patterns are shell-style (`claude-opus-*`). An empty allow list allows every model; a
    deny match always wins. A key's policy narrows its team's: both must allow a model.
    """

    team = models.OneToOneField(
        Team, on_delete=models.CASCADE, null=True, blank=True, related_name="model_policy"
    )
    virtual_key = models.OneToOneField(
        VirtualKey, on_delete=models.CASCADE, null=True, blank=True, related_name="model_policy"
    )
    allowed_patterns = models.JSONField(
        default=list, blank=True, validators=[validate_pattern_list]
    )
    denied_patterns = models.JSONField(default=list, blank=True, validators=[validate_pattern_list])
    overrides = models.JSONField(default=dict, blank=True, validators=[validate_overrides])

    class Meta:
        verbose_name_plural = "model policies"
        constraints = [models.CheckConstraint(condition=ONE_OWNER, name="modelpolicy_single_owner")]

    def __str__(self) -> str:
        return f"model policy of {self.virtual_key or self.team}"

    def clean(self) -> None:
        _check_single_owner(self.team_id, self.virtual_key_id)
