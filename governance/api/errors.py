"""Errors as the API answers them: services raise Django's exceptions, clients get DRF's."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import NON_FIELD_ERRORS
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import IntegrityError
from django.db.models import ProtectedError, RestrictedError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.defaults import page_not_found
from rest_framework import exceptions, serializers, status
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.views import exception_handler as drf_exception_handler


class Conflict(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "the change conflicts with the current state"
    default_code = "conflict"


class PreconditionFailed(exceptions.APIException):
    status_code = status.HTTP_412_PRECONDITION_FAILED
    default_detail = "If-Match does not match the current ETag: read the object again"
    default_code = "precondition_failed"


class Unprocessable(exceptions.APIException):
    status_code = status.HTTP_422_UNPROCESSABLE_ENTITY
    default_detail = "the request cannot be processed"
    default_code = "unprocessable"


def validation_error(exc: DjangoValidationError) -> exceptions.ValidationError:
    """A service's ValidationError as a 400 body: {field: [messages]}, non-field errors under
    DRF's key rather than Django's `__all__`."""
    detail = serializers.as_serializer_error(exc)
    if NON_FIELD_ERRORS in detail:
        detail[api_settings.NON_FIELD_ERRORS_KEY] = detail.pop(NON_FIELD_ERRORS)
    return exceptions.ValidationError(detail)


def _protected(exc: ProtectedError | RestrictedError) -> Conflict:
    kinds = sorted({obj._meta.verbose_name_plural for obj in exc.args[1]})
    return Conflict(f"still in use by {', '.join(str(kind) for kind in kinds)}: remove those first")


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF's handler, also for the exceptions the services and the ORM raise."""
    if isinstance(exc, DjangoValidationError):
        exc = validation_error(exc)
    elif isinstance(exc, ProtectedError | RestrictedError):
        exc = _protected(exc)
    elif isinstance(exc, IntegrityError):
        # A concurrent request won a uniqueness race that validation could not see.
        exc = Conflict("conflicts with a row written at the same time: retry")
    return drf_exception_handler(exc, context)


API_PREFIX = "/api/"


def not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    """Django's 404 view (urls.handler404): a URL under /api/ that matches no route answers
    JSON, like the API's own 404s; any other gets Django's page."""
    if request.path.startswith(API_PREFIX):
        return JsonResponse({"detail": "Not found."}, status=404)
    return page_not_found(request, exception)
