"""The audit log: read-only, with the verification of its hash chain."""

from __future__ import annotations

import django_filters
from drf_spectacular.utils import extend_schema
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from governance.api.filters import FilterSet, UTCDateTimeFilter
from governance.api.serializers import audit as s
from governance.api.viewsets import ReadViewSet
from governance.models import AuditEvent, Role
from governance.services import audit


class AuditEventFilter(FilterSet):
    subject_type = django_filters.CharFilter(help_text="e.g. governance.VirtualKey")
    subject_id = django_filters.CharFilter()
    verb = django_filters.ChoiceFilter(choices=AuditEvent.Verb.choices)
    actor = django_filters.CharFilter(help_text="e.g. user:alice, config:gov.yaml, system")
    created_after = UTCDateTimeFilter(field_name="created_at", lookup_expr="gte")
    created_before = UTCDateTimeFilter(field_name="created_at", lookup_expr="lt")

    class Meta:
        model = AuditEvent
        fields = ("subject_type", "subject_id", "verb", "actor", "created_after", "created_before")


class AuditEventViewSet(ReadViewSet):
    """Every governance change, newest first by default. Platform admins and auditors of
    every organization read it (its events are not tied to one organization)."""

    model = AuditEvent
    output_serializer = s.AuditEventOutput
    action_serializers = {"verify": (None, s.ChainReportOutput)}
    filterset_class = AuditEventFilter
    ordering = ["-id"]

    @extend_schema(summary="Recompute the hash chain and report the first broken event")
    @action(detail=False, methods=["get"], filter_backends=[], pagination_class=None)
    def verify(self, request: Request) -> Response:
        if not any(self.access.holds(role) for role in (Role.PLATFORM_ADMIN, Role.AUDITOR)):
            self.permission_denied(request, message="platform admins and auditors only")
        report = audit.verify_chain()
        return Response(
            s.ChainReportOutput(
                {
                    "ok": report.ok,
                    "checked": report.checked,
                    "first_bad_id": report.first_bad_id,
                    "problem": report.problem,
                    "anchors_checked": report.anchors_checked,
                }
            ).data
        )
