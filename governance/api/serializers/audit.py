"""The audit log (read-only) and its verification."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from governance.api.serializers.base import OutputSerializer
from governance.models import AuditEvent


class AuditEventOutput(OutputSerializer):
    class Meta:
        model = AuditEvent
        fields = (
            "id",
            "created_at",
            "actor",
            "actor_user",
            "verb",
            "subject_type",
            "subject_id",
            "subject_repr",
            "before",
            "after",
            "note",
            "prev_hash",
            "hash",
            "hash_version",
        )


class ChainReportOutput(serializers.Serializer[Any]):
    ok = serializers.BooleanField()
    checked = serializers.IntegerField(help_text="Events whose hash was recomputed.")
    first_bad_id = serializers.IntegerField(allow_null=True)
    problem = serializers.CharField(allow_blank=True)
    anchors_checked = serializers.IntegerField()
