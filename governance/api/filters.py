"""Query-string filters (django-filter): `?organization=3&team=5&revoked=false`.

Related objects are filtered by id as plain numbers, never looked up: an id the caller may
not see filters to nothing, exactly like one that does not exist.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import django_filters
from django import forms
from django.core.exceptions import ValidationError
from django_filters.fields import IsoDateTimeField
from django_filters.rest_framework import FilterSet
from drf_spectacular.utils import extend_schema_field

__all__ = ["FilterSet", "IdFilter", "UTCDateTimeFilter", "revoked_filter"]

BIGINT_MAX = 2**63 - 1


@extend_schema_field({"type": "integer", "minimum": 1, "maximum": BIGINT_MAX})
class IdFilter(django_filters.Filter):
    """An object's id (a positive bigint); anything else is a 400."""

    field_class = forms.IntegerField

    def __init__(self, field_name: str, **kwargs: Any) -> None:
        kwargs.setdefault("min_value", 1)
        kwargs.setdefault("max_value", BIGINT_MAX)
        super().__init__(field_name=field_name, **kwargs)


def revoked_filter(field_name: str = "revoked_at") -> django_filters.BooleanFilter:
    """`?revoked=true` for revoked rows, `false` for the others."""
    return django_filters.BooleanFilter(
        field_name=field_name, lookup_expr="isnull", exclude=True, label="revoked"
    )


class UTCDateTimeField(IsoDateTimeField):
    """An ISO 8601 date-time, in UTC: PostgreSQL refuses offsets beyond ±15:59 (ISO allows
    up to ±23:59), and a moment that UTC cannot hold (year 9999 west of UTC) is a 400."""

    def to_python(self, value: Any) -> dt.datetime | None:
        parsed = super().to_python(value)
        if parsed is None:
            return None
        try:
            return parsed.astimezone(dt.UTC)
        except OverflowError as exc:
            raise ValidationError("out of range", code="overflow") from exc


class UTCDateTimeFilter(django_filters.IsoDateTimeFilter):
    field_class = UTCDateTimeField
