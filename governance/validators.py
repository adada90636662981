"""Field validators shared by models, admin forms and the config file."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError


def validate_pattern_list(value: Any) -> None:
    if not isinstance(value, list) or not all(isinstance(p, str) and p.strip() for p in value):
        raise ValidationError('must be a list of patterns, e.g. ["claude-opus-*"]')


def validate_thresholds(value: Any) -> None:
    if not isinstance(value, list) or not all(
        isinstance(t, int) and not isinstance(t, bool) and 0 < t <= 1000 for t in value
    ):
        raise ValidationError(
            "must be a list of percentages between 1 and 1000, e.g. [50, 80, 100]"
        )
    if len(set(value)) != len(value):
        raise ValidationError("thresholds must not repeat")


def validate_overrides(value: Any) -> None:
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and k and isinstance(v, str) and v for k, v in value.items()
    ):
        raise ValidationError(
            'must map a model pattern to a model, e.g. {"claude-opus-*": "claude-sonnet-4-6"}'
        )
