"""The viewsets every resource builds on: reads filtered by the caller's roles, writes through
the audited services, ETag / If-Match, Idempotency-Key.

A resource names its model, its serializers and, where the generic path does not fit, the
hooks `new_instance`, `apply_changes`, `save_new`, `save_changes` and `remove`. Access is
checked on every object: not visible -> 404 (the queryset is the visible rows), visible but
not changeable -> 403, and a create or update is checked again on the object as it would be
saved (a team lead cannot create a key, or move one, into another team).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from django.db import models, transaction
from django.db.models import QuerySet
from django_filters.rest_framework import DjangoFilterBackend
from rest_framework import serializers, status
from rest_framework.filters import OrderingFilter
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.viewsets import GenericViewSet

from governance.access import Access
from governance.actors import Actor
from governance.api import idempotency
from governance.api.conditional import check_if_match, etag_of
from governance.api.parsers import StrictJSONParser
from governance.api.schema import ServiceAutoSchema
from governance.services import common

SerializerClass = type[serializers.BaseSerializer[Any]]
Direction = Literal["request", "response"]


def no_store(response: Response) -> Response:
    """An answer holding a secret is kept by no cache, shared or private."""
    response["Cache-Control"] = "no-store"
    return response


class ReadViewSet(GenericViewSet[Any]):
    """list and retrieve of the rows the caller may view."""

    model: ClassVar[type[models.Model]]
    output_serializer: ClassVar[SerializerClass]
    # Serializers of extra actions: {action: (request, response)}.
    action_serializers: ClassVar[dict[str, tuple[SerializerClass | None, SerializerClass]]] = {}

    filter_backends = [DjangoFilterBackend, OrderingFilter]
    ordering_fields: ClassVar[list[str]] = ["id", "created_at"]
    ordering: ClassVar[list[str]] = ["id"]
    # Ids are bigints: a longer number could only be a 404.
    lookup_value_regex = "[0-9]{1,18}"
    parser_classes = [StrictJSONParser]
    schema = ServiceAutoSchema()

    # --- who -------------------------------------------------------------------------------

    @property
    def access(self) -> Access:
        return Access.of(self.request.user)

    @property
    def actor(self) -> Actor:
        return Actor.of_user(self.request.user)

    # --- rows ------------------------------------------------------------------------------

    def base_queryset(self) -> QuerySet[Any]:
        """Every row of the model, with what the output serializer reads (select_related)."""
        return self.model._default_manager.all()

    def get_queryset(self) -> QuerySet[Any]:
        return self.access.visible(self.base_queryset())

    def require_change(self, obj: models.Model) -> None:
        if not self.access.can_change(obj):
            self.permission_denied(self.request, message="your role may not change this")

    # --- serializers -----------------------------------------------------------------------

    def serializer_for(
        self, action: str | None, method: str, direction: Direction
    ) -> SerializerClass | None:
        """The serializer of one action's request or response (also read by the schema)."""
        if action in self.action_serializers:
            request, response = self.action_serializers[action]
            return request if direction == "request" else response
        if direction == "request" and method in ("GET", "HEAD", "DELETE", "OPTIONS"):
            return None
        return self.output_serializer

    def get_serializer_class(self) -> SerializerClass:
        method = self.request.method or "GET"
        direction: Direction = "response" if method in ("GET", "HEAD", "OPTIONS") else "request"
        found = self.serializer_for(self.action, method, direction)
        return found or self.output_serializer

    def represent(self, obj: Any) -> dict[str, Any]:
        data: dict[str, Any] = self.output_serializer(
            obj, context=self.get_serializer_context()
        ).data
        return data

    def with_etag(self, data: dict[str, Any], status_code: int = status.HTTP_200_OK) -> Response:
        return Response(data, status=status_code, headers={"ETag": etag_of(data)})

    # --- actions ---------------------------------------------------------------------------

    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        queryset = self.filter_queryset(self.get_queryset())
        page = self.paginate_queryset(queryset)
        rows = page if page is not None else list(queryset)
        data = self.output_serializer(rows, many=True, context=self.get_serializer_context()).data
        return self.get_paginated_response(data) if page is not None else Response(data)

    def retrieve(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return self.with_etag(self.represent(self.get_object()))


class ServiceViewSet(ReadViewSet):
    """Create, update and delete through the services, on top of the reads."""

    input_serializer: ClassVar[SerializerClass]
    update_serializer: ClassVar[SerializerClass | None] = None  # None: input_serializer

    def serializer_for(
        self, action: str | None, method: str, direction: Direction
    ) -> SerializerClass | None:
        if direction == "request" and action == "create":
            return self.input_serializer
        if direction == "request" and action in ("update", "partial_update"):
            return self.update_serializer or self.input_serializer
        if direction == "request" and action is None and method in ("POST", "PUT", "PATCH"):
            # The browsable API's forms (no action yet when it asks).
            if method == "POST":
                return self.input_serializer
            return self.update_serializer or self.input_serializer
        return super().serializer_for(action, method, direction)

    # --- hooks -----------------------------------------------------------------------------

    def new_instance(self, data: dict[str, Any]) -> models.Model:
        """The unsaved object a create would save (checked with Access before saving)."""
        return self.model(**data)

    def apply_changes(self, obj: models.Model, data: dict[str, Any]) -> None:
        for name, value in data.items():
            setattr(obj, name, value)

    def save_new(self, obj: models.Model, data: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        """Save a new object through its service: (the saved object, extra response fields).
        By default as a change is saved."""
        self.save_changes(obj, data)
        return obj, {}

    def save_changes(self, obj: models.Model, data: dict[str, Any]) -> None:
        """Save a new or changed object through its service (audited)."""
        common.save_instance(obj, actor=self.actor)

    def remove(self, obj: models.Model) -> None:
        common.delete_instance(obj, actor=self.actor)

    # --- actions ---------------------------------------------------------------------------

    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return idempotency.create_once(request, lambda: self._create(request))

    def _create(self, request: Request) -> Response:
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        obj = self.new_instance(data)
        self.require_change(obj)
        saved, extra = self.save_new(obj, data)
        representation = self.represent(saved)
        headers = {"ETag": etag_of(representation)}
        response = Response(
            {**representation, **extra}, status=status.HTTP_201_CREATED, headers=headers
        )
        return no_store(response) if "secret" in extra else response

    def _locked(self, obj: models.Model) -> Any:
        """The row again, locked until the change commits: the If-Match comparison and the
        write see the same version."""
        return type(obj)._default_manager.select_for_update().get(pk=obj.pk)

    def update(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        partial = bool(kwargs.pop("partial", False))
        self.require_change(self.get_object())
        with transaction.atomic():
            obj = self._locked(self.get_object())
            check_if_match(request, etag_of(self.represent(obj)))
            serializer = self.get_serializer(obj, data=request.data, partial=partial)
            serializer.is_valid(raise_exception=True)
            data = dict(serializer.validated_data)
            self.apply_changes(obj, data)
            self.require_change(obj)
            self.save_changes(obj, data)
        return self.with_etag(self.represent(self.get_object()))

    def partial_update(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return self.update(request, *args, partial=True, **kwargs)

    def destroy(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        self.require_change(self.get_object())
        with transaction.atomic():
            obj = self._locked(self.get_object())
            check_if_match(request, etag_of(self.represent(obj)))
            self.remove(obj)
        return Response(status=status.HTTP_204_NO_CONTENT)
