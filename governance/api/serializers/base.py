"""What every resource's serializers share."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from rest_framework import serializers

from governance.access import Access


class VisiblePrimaryKey(serializers.PrimaryKeyRelatedField[Any]):
    """A related object by id, among those the caller may see: an id they may not see is
    refused like one that never existed, so ids of other organizations do not leak."""

    def get_queryset(self) -> QuerySet[Any]:
        queryset: QuerySet[Any] = super().get_queryset()  # type: ignore[assignment]
        request = self.context.get("request")
        if request is None:
            return queryset.none()
        return Access.of(request.user).visible(queryset)


class InputSerializer(serializers.ModelSerializer[Any]):
    """Validates a request body; the view builds the object and a service saves it.

    Uniqueness and cross-field rules are the model's own (full_clean in the services), so the
    serializer adds no unique-together validators of its own.
    """

    serializer_related_field = VisiblePrimaryKey

    class Meta:
        validators: list[Any] = []


class OutputSerializer(serializers.ModelSerializer[Any]):
    """An object as the API shows it: every field read-only."""

    def get_fields(self) -> dict[str, serializers.Field[Any, Any, Any, Any]]:
        fields = super().get_fields()
        for field in fields.values():
            field.read_only = True
        return fields


class SecretMixin(serializers.Serializer[Any]):
    """The one-time secret of a created (or rotated) credential."""

    secret = serializers.CharField(
        allow_null=True,
        help_text="Shown in this response only; null in a replay of an idempotent request.",
    )
    secret_withheld = serializers.BooleanField(
        help_text="True in a replay (Idempotency-Key): the secret was shown by the first answer "
        "only and is not stored.",
    )
