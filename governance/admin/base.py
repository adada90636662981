"""The admin's write path: every save and delete goes through the audited services."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Generic, TypeVar

from django.contrib import admin
from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.db import models, transaction
from django.forms import BaseForm, BaseModelFormSet
from django.http import HttpRequest, HttpResponse

from governance.actors import Actor
from governance.services import common

if TYPE_CHECKING:
    ModelAdminBase = admin.ModelAdmin
    TabularInlineBase = admin.TabularInline
    StackedInlineBase = admin.StackedInline
else:
    # django-stubs types these as generic; the runtime classes only need to accept a subscript
    # (what django_stubs_ext.monkeypatch does, without making that dev package a dependency).
    class _Subscriptable:
        def __class_getitem__(cls, _item: Any) -> Any:
            return cls

    class ModelAdminBase(_Subscriptable, admin.ModelAdmin):
        pass

    class TabularInlineBase(_Subscriptable, admin.TabularInline):
        pass

    class StackedInlineBase(_Subscriptable, admin.StackedInline):
        pass


M = TypeVar("M", bound=models.Model)
F = TypeVar("F", bound=BaseForm)

_SERVICE_ERROR_ATTR = "_governance_service_error"


def actor_for(request: HttpRequest) -> Actor:
    return Actor.of_user(request.user)


def save_formset(formset: BaseModelFormSet[Any, Any], *, actor: Actor) -> None:
    """Save an inline formset row by row through the services (deletions first)."""
    instances = formset.save(commit=False)
    for obj in formset.deleted_objects:
        common.delete_instance(obj, actor=actor)
    for obj in instances:
        common.save_instance(obj, actor=actor)
    formset.save_m2m()


def add_validation_error(form: BaseForm, error: ValidationError) -> None:
    """Attach a service's ValidationError to the form, on the field it names if it has one."""
    if not hasattr(error, "error_dict"):
        form.add_error(None, error)
        return
    for field, errors in error.error_dict.items():
        if field in form.fields:
            form.add_error(field, errors)
        elif field == NON_FIELD_ERRORS:
            form.add_error(None, errors)
        else:
            form.add_error(None, [f"{field}: {message}" for e in errors for message in e])


def _with_error(form_class: type[F], error: ValidationError) -> type[F]:
    def clean(self: F) -> Any:
        cleaned = form_class.clean(self)
        add_validation_error(self, error)
        return cleaned

    metaclass: Any = type(form_class)  # ModelFormMetaclass: it builds the form's fields
    subclass: type[F] = metaclass(form_class.__name__, (form_class,), {"clean": clean})
    return subclass


class ServiceModelAdmin(ModelAdminBase[M], Generic[M]):
    """A ModelAdmin whose writes are audited service calls, never Model.save().

    Forms validate with the model's own full_clean, so most mistakes are plain form errors. A
    check that only a service knows (raised as ValidationError while saving) rolls the whole
    save back, and the form is shown again with that error and the user's input.
    """

    # Django 6 makes https the default; provider and MCP URLs are https nearly always.
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}

    def save_model(self, request: HttpRequest, obj: M, form: Any, change: Any) -> None:
        common.save_instance(obj, actor=actor_for(request))

    def delete_model(self, request: HttpRequest, obj: M) -> None:
        common.delete_instance(obj, actor=actor_for(request))

    def delete_queryset(self, request: HttpRequest, queryset: models.QuerySet[Any]) -> None:
        actor = actor_for(request)
        with transaction.atomic():
            for obj in queryset:
                common.delete_instance(obj, actor=actor)

    def save_formset(self, request: HttpRequest, form: Any, formset: Any, change: Any) -> None:
        save_formset(formset, actor=actor_for(request))

    def changeform_view(
        self,
        request: HttpRequest,
        object_id: str | None = None,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        try:
            return super().changeform_view(request, object_id, form_url, extra_context)
        except ValidationError as error:
            if getattr(request, _SERVICE_ERROR_ATTR, None) is not None:
                raise
            # changeform_view's transaction has rolled back; run it again with the error in
            # the form, which is then invalid and so re-rendered with the user's input.
            setattr(request, _SERVICE_ERROR_ATTR, error)
            return super().changeform_view(request, object_id, form_url, extra_context)

    def get_form(
        self, request: HttpRequest, obj: M | None = None, change: bool = False, **kwargs: Any
    ) -> Any:
        form_class = super().get_form(request, obj, change, **kwargs)
        error = getattr(request, _SERVICE_ERROR_ATTR, None)
        return form_class if error is None else _with_error(form_class, error)
