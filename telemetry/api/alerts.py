"""Alert channels (webhook URLs write-only) and alerts (read-only) under /api/v1/.

Registered on governance's router from TelemetryConfig.ready (`register_routes`): governance
imports nothing of telemetry. Roles come from telemetry.access: finance and platform admins
change channels; they and auditors read channels and alerts of their organizations.
"""

from __future__ import annotations

from typing import Any

import django_filters
from django.db import models
from rest_framework import serializers

from governance.api.filters import FilterSet, IdFilter
from governance.api.routers import register
from governance.api.serializers.base import InputSerializer, OutputSerializer, VisiblePrimaryKey
from governance.api.viewsets import ReadViewSet, ServiceViewSet
from governance.models import Organization
from telemetry import channels
from telemetry.models import AlertChannel, AlertEvent

TARGET_HELP = (
    "Email: addresses separated by commas. Webhook / Slack: the http(s) URL, stored encrypted "
    "and never returned (leave out or blank on update to keep the stored one)."
)


class AlertChannelInput(InputSerializer):
    organization = VisiblePrimaryKey(queryset=Organization.objects.all())
    target = serializers.CharField(
        max_length=500, required=False, allow_blank=True, write_only=True, help_text=TARGET_HELP
    )

    class Meta(InputSerializer.Meta):
        model = AlertChannel
        fields = ("organization", "name", "kind", "target", "enabled")


class AlertChannelUpdate(InputSerializer):
    """A channel stays in its organization."""

    target = serializers.CharField(
        max_length=500, required=False, allow_blank=True, write_only=True, help_text=TARGET_HELP
    )

    class Meta(InputSerializer.Meta):
        model = AlertChannel
        fields = ("name", "kind", "target", "enabled")


class AlertChannelOutput(OutputSerializer):
    organization = serializers.IntegerField(source="organization_id")
    target = serializers.SerializerMethodField(
        help_text="The email addresses; for a webhook its URL redacted to scheme and host."
    )
    webhook_url_set = serializers.SerializerMethodField()

    class Meta:
        model = AlertChannel
        fields = ("id", "organization", "name", "kind", "target", "webhook_url_set", "enabled")

    def get_target(self, channel: AlertChannel) -> str:
        return channels.describe_target(channel)

    def get_webhook_url_set(self, channel: AlertChannel) -> bool:
        return channel.is_webhook and bool(channel.secret_target or channel.target)


class AlertChannelFilter(FilterSet):
    organization = IdFilter("organization_id")
    kind = django_filters.ChoiceFilter(choices=AlertChannel.Kind.choices)

    class Meta:
        model = AlertChannel
        fields = ("organization", "kind")


class AlertChannelViewSet(ServiceViewSet):
    """Where budget alerts go. A webhook URL is a secret (Slack's carry a token): write-only."""

    model = AlertChannel
    input_serializer = AlertChannelInput
    update_serializer = AlertChannelUpdate
    output_serializer = AlertChannelOutput
    filterset_class = AlertChannelFilter
    ordering_fields = ["id", "name"]

    def new_instance(self, data: dict[str, Any]) -> models.Model:
        organization = data.pop("organization")
        return AlertChannel(organization_id=organization.pk, **data)

    def save_changes(self, obj: models.Model, data: dict[str, Any]) -> None:
        assert isinstance(obj, AlertChannel)
        channels.save_channel(obj, actor=self.actor)

    def remove(self, obj: models.Model) -> None:
        assert isinstance(obj, AlertChannel)
        channels.delete_channel(obj, actor=self.actor)


class AlertOutput(OutputSerializer):
    organization = serializers.IntegerField(source="organization_id")
    budget = serializers.IntegerField(source="budget_id")

    class Meta:
        model = AlertEvent
        fields = (
            "id",
            "organization",
            "budget",
            "period_label",
            "kind",
            "threshold_percent",
            "spent_micros",
            "limit_micros",
            "forecast_exhaustion",
            "message",
            "created_at",
            "delivered_at",
            "attempts",
        )


class AlertFilter(FilterSet):
    organization = IdFilter("organization_id")
    budget = IdFilter("budget_id")
    kind = django_filters.ChoiceFilter(choices=AlertEvent.Kind.choices)
    delivered = django_filters.BooleanFilter(
        field_name="delivered_at", lookup_expr="isnull", exclude=True
    )

    class Meta:
        model = AlertEvent
        fields = ("organization", "budget", "kind", "delivered")


class AlertViewSet(ReadViewSet):
    """Budget alerts as they were sent (threshold crossed, exhaustion forecast), read-only."""

    model = AlertEvent
    output_serializer = AlertOutput
    filterset_class = AlertFilter
    ordering = ["-id"]


def register_routes() -> None:
    register("alert-channels", AlertChannelViewSet, "alert-channels")
    register("alerts", AlertViewSet, "alerts")
