"""Query-string filters (django-filter): `?organization=3&team=5&revoked=false`.

Related objects are filtered by id as plain numbers, never looked up: an id the caller may
not see filters to nothing, exactly like one that does not exist.
"""

from __future__ import annotations

from typing import Any

import django_filters
from django import forms
from django_filters.rest_framework import FilterSet
from drf_spectacular.utils import extend_schema_field

__all__ = ["FilterSet", "IdFilter", "revoked_filter"]

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
