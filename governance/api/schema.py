"""The OpenAPI description of the API's conventions, added to every operation of its viewsets:
request and response serializers per action, ETag / If-Match / Idempotency-Key headers, and
the error answers each kind of operation can give."""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter

from governance.api.idempotency import HEADER as IDEMPOTENCY_HEADER
from governance.api.idempotency import MAX_KEY_LENGTH, REPLAYED_HEADER

DETAIL: dict[str, Any] = {
    "type": "object",
    "properties": {"detail": {"type": "string"}},
    "required": ["detail"],
}
FIELD_ERRORS: dict[str, Any] = {
    "type": "object",
    "description": "{field: [messages]}; `non_field_errors` or `detail` for the others.",
    "additionalProperties": True,
}
# Ids in paths: what the routes match (viewsets.ReadViewSet.lookup_value_regex).
PATH_ID: dict[str, Any] = {"type": "integer", "minimum": 1, "maximum": 10**18 - 1}
WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
CONDITIONAL = frozenset({"PUT", "PATCH", "DELETE"})


def _error(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


class ServiceAutoSchema(AutoSchema):
    """Reads the serializers from the view (`serializer_for`), and documents the answers
    shared by every resource."""

    def get_tags(self) -> list[str]:
        return [str(getattr(self.view, "basename", None) or super().get_tags()[0])]

    def get_request_serializer(self) -> Any:
        serializer_for = getattr(self.view, "serializer_for", None)
        if serializer_for is None:
            return super().get_request_serializer()
        return serializer_for(getattr(self.view, "action", None), self.method, "request")

    def get_response_serializers(self) -> Any:
        serializer_for = getattr(self.view, "serializer_for", None)
        if serializer_for is None:
            return super().get_response_serializers()
        return serializer_for(getattr(self.view, "action", None), self.method, "response")

    def _is_detail(self) -> bool:
        return "{" in self.path

    def get_override_parameters(self) -> list[Any]:
        parameters: list[Any] = list(super().get_override_parameters())
        action = getattr(self.view, "action", None)
        if "{id}" in self.path:
            parameters.append(OpenApiParameter("id", PATH_ID, OpenApiParameter.PATH))
        if self.method in CONDITIONAL and self._is_detail():
            parameters.append(
                OpenApiParameter(
                    "If-Match",
                    OpenApiTypes.STR,
                    OpenApiParameter.HEADER,
                    description="Optional: the ETag read before; 412 if the object changed since.",
                )
            )
        if action == "create":
            parameters.append(
                OpenApiParameter(
                    IDEMPOTENCY_HEADER,
                    {"type": "string", "minLength": 1, "maxLength": MAX_KEY_LENGTH},
                    OpenApiParameter.HEADER,
                    description="Optional: a retry with the same key and body within 24 h "
                    "returns the first answer (never a secret again) instead of creating twice.",
                )
            )
            parameters.append(
                OpenApiParameter(
                    REPLAYED_HEADER,
                    OpenApiTypes.STR,
                    OpenApiParameter.HEADER,
                    response=[201],
                    description="`true` when the answer is a replay of an earlier request.",
                )
            )
        if action in ("retrieve", "create", "update", "partial_update"):
            parameters.append(
                OpenApiParameter(
                    "ETag",
                    OpenApiTypes.STR,
                    OpenApiParameter.HEADER,
                    response=[200, 201],
                    description="The object's version: send it back in If-Match.",
                )
            )
        return parameters

    def _get_response_bodies(self, direction: Any = "response") -> dict[str, Any]:
        responses: dict[str, Any] = super()._get_response_bodies(direction)
        for code, response in self._error_responses().items():
            responses.setdefault(code, response)
        return responses

    def _error_responses(self) -> dict[str, Any]:
        errors = {
            "401": _error(DETAIL, "No valid API token or session."),
            "403": _error(DETAIL, "No gateway role, or the role may not do this."),
            "404": _error(DETAIL, "Not found, or not visible to the caller's roles."),
            "405": _error(DETAIL, "Method not allowed on this object."),
            "406": _error(DETAIL, "The Accept header names no format the API serves."),
        }
        if self.method in WRITES or not self._is_detail():
            errors["400"] = _error(FIELD_ERRORS, "Invalid input, query or header.")
        if self.method in WRITES:
            errors["409"] = _error(DETAIL, "Conflicts with the current state (e.g. in use).")
        if self.method in WRITES - {"DELETE"}:
            errors["415"] = _error(DETAIL, "The body is not JSON.")
        if self.method in CONDITIONAL and self._is_detail():
            errors["412"] = _error(DETAIL, "If-Match does not match the current ETag.")
        if getattr(self.view, "action", None) == "create":
            errors["422"] = _error(DETAIL, "The Idempotency-Key was used for another request.")
        return errors


class ApiTokenScheme(OpenApiAuthenticationExtension):  # type: ignore[no-untyped-call]
    """`Authorization: Bearer <API token>` in the schema's security schemes."""

    target_class = "governance.api.authentication.ApiTokenAuthentication"
    name = "apiToken"

    def get_security_definition(self, auto_schema: AutoSchema) -> dict[str, Any]:
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "An API token (gwapi-…): from the admin, or manage.py create_api_token.",
        }
