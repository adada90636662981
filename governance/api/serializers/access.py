"""Memberships (roles) and API tokens."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.utils import timezone
from rest_framework import serializers

from governance.api.serializers.base import (
    InputSerializer,
    OutputSerializer,
    SecretMixin,
    VisiblePrimaryKey,
)
from governance.models import ApiToken, Membership, Team

User = get_user_model()


def _username() -> serializers.SlugRelatedField[Any]:
    return serializers.SlugRelatedField(
        slug_field=User.USERNAME_FIELD, queryset=User._default_manager.all()
    )


class MembershipInput(InputSerializer):
    """A role in one organization (`organization` null: in every organization); team leads
    list the teams they lead."""

    user = _username()
    teams = VisiblePrimaryKey(queryset=Team.objects.all(), many=True, required=False)

    class Meta(InputSerializer.Meta):
        model = Membership
        fields = ("user", "organization", "role", "teams")
        extra_kwargs = {"organization": {"required": False, "allow_null": True}}


class MembershipUpdate(InputSerializer):
    """A membership keeps its user and organization; its role and teams change."""

    teams = VisiblePrimaryKey(queryset=Team.objects.all(), many=True, required=False)

    class Meta(InputSerializer.Meta):
        model = Membership
        fields = ("role", "teams")


class MembershipOutput(OutputSerializer):
    user = serializers.CharField(source="user.get_username", help_text="The username.")
    teams = serializers.ManyRelatedField(
        child_relation=serializers.PrimaryKeyRelatedField[Team](read_only=True), read_only=True
    )

    class Meta:
        model = Membership
        fields = (
            "id",
            "user",
            "organization",
            "role",
            "teams",
            "source",
            "created_at",
            "updated_at",
        )


class TokenInput(serializers.Serializer[Any]):
    """A token for yourself; platform admins of every organization may name another user."""

    name = serializers.CharField(max_length=100)
    expires_at = serializers.DateTimeField(required=False, allow_null=True, default=None)
    user = serializers.SlugRelatedField(
        slug_field=User.USERNAME_FIELD,
        queryset=User._default_manager.all(),
        required=False,
        help_text="Username (default: yourself).",
    )

    def validate_expires_at(self, value: Any) -> Any:
        if value is not None and value <= timezone.now():
            raise serializers.ValidationError("must be in the future")
        return value


class TokenOutput(OutputSerializer):
    user = serializers.CharField(source="user.get_username", help_text="The username.")
    is_active = serializers.BooleanField(read_only=True)

    class Meta:
        model = ApiToken
        fields: tuple[str, ...] = (
            "id",
            "user",
            "name",
            "prefix",
            "expires_at",
            "revoked_at",
            "last_used_at",
            "is_active",
            "created_at",
            "updated_at",
        )


class TokenWithSecret(SecretMixin, TokenOutput):
    class Meta(TokenOutput.Meta):
        fields = (*TokenOutput.Meta.fields, "secret", "secret_withheld")
