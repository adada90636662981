"""Virtual keys: created with their secret (shown once), rotated, revoked."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from governance.api.serializers.base import InputSerializer, OutputSerializer, SecretMixin
from governance.models import VirtualKey

MAX_GRACE_SECONDS = 30 * 24 * 3600


class KeyInput(InputSerializer):
    """A key of an organization, optionally of a team and project; a sub-key names its
    `parent` and takes the parent's organization, team and project."""

    class Meta(InputSerializer.Meta):
        model = VirtualKey
        fields = (
            "organization",
            "team",
            "project",
            "parent",
            "name",
            "owner",
            "expires_at",
            "log_content",
        )
        extra_kwargs = {"organization": {"required": False}}

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if not any(attrs.get(name) for name in ("organization", "team", "parent")):
            raise serializers.ValidationError(
                {"organization": "give the organization (or a team, or a parent key)"}
            )
        return attrs


class KeyUpdate(InputSerializer):
    """A key stays where it was issued (organization, team, project, parent)."""

    class Meta(InputSerializer.Meta):
        model = VirtualKey
        fields = ("name", "owner", "expires_at", "log_content")


class KeyOutput(OutputSerializer):
    is_active = serializers.BooleanField(read_only=True)

    class Meta:
        model = VirtualKey
        fields: tuple[str, ...] = (
            "id",
            "organization",
            "team",
            "project",
            "parent",
            "name",
            "owner",
            "prefix",
            "expires_at",
            "revoked_at",
            "previous_valid_until",
            "log_content",
            "is_active",
            "created_at",
            "updated_at",
        )


class KeyWithSecret(SecretMixin, KeyOutput):
    class Meta(KeyOutput.Meta):
        fields = (*KeyOutput.Meta.fields, "secret", "secret_withheld")


class RotateInput(serializers.Serializer[Any]):
    grace_seconds = serializers.IntegerField(
        min_value=0,
        max_value=MAX_GRACE_SECONDS,
        default=0,
        help_text="How long the old secret keeps working (0: it stops now).",
    )


class RevokeInput(serializers.Serializer[Any]):
    reason = serializers.CharField(max_length=300, required=False, allow_blank=True, default="")
