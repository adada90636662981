"""The admin's write path: every save and delete goes through the audited services."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar, cast

from django.contrib import admin
from django.contrib.admin.views.main import ChangeList
from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.db import models, transaction
from django.forms import BaseForm, BaseModelFormSet
from django.http import HttpRequest, HttpResponse

from governance.actors import Actor
from governance.admin import permissions
from governance.admin.permissions import RoleAdminMixin, RoleInlineMixin
from governance.models import Budget
from governance.services import budgets, common

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

    # Inlines answer to the gateway's roles (governance.admin.permissions).
    class TabularInlineBase(_Subscriptable, RoleInlineMixin, admin.TabularInline):
        pass

    class StackedInlineBase(_Subscriptable, RoleInlineMixin, admin.StackedInline):
        pass


M = TypeVar("M", bound=models.Model)
F = TypeVar("F", bound=BaseForm)

_SERVICE_ERROR_ATTR = "_governance_service_error"


class ListColumn(Protocol):
    """A changelist column that an app above governance adds to a governance admin list.

    Governance imports nothing from those apps (telemetry's "budget used" column, for one):
    they register their columns here from their AppConfig.ready, and ServiceModelAdmin
    shows them.
    """

    @property
    def name(self) -> str:
        """The list_display entry, and so the cells' `field-<name>` CSS class."""

    @property
    def after(self) -> str:
        """The list_display entry the column follows (the end of the list if it is absent)."""

    @property
    def cell(self) -> Callable[[Any], str]:
        """One row's cell, described with admin.display (its description is the header)."""

    def prepare(self, rows: Sequence[Any]) -> None:
        """Run once on the page's rows before any cell, so a page costs one query, not one a row."""


_LIST_COLUMNS: dict[type[models.Model], list[ListColumn]] = {}


def add_list_column(model: type[models.Model], column: ListColumn) -> None:
    """Show `column` on the changelist of `model`'s ServiceModelAdmin (once, whatever calls it)."""
    columns = _LIST_COLUMNS.setdefault(model, [])
    columns[:] = [kept for kept in columns if kept.name != column.name]
    columns.append(column)


def list_columns(model: type[models.Model]) -> tuple[ListColumn, ...]:
    return tuple(_LIST_COLUMNS.get(model, ()))


class PreparedChangeList(ChangeList):
    """A changelist that lets the registered columns prepare the page's rows."""

    def get_results(self, request: HttpRequest) -> None:
        super().get_results(request)
        for column in list_columns(self.model):
            column.prepare(self.result_list)


def actor_for(request: HttpRequest) -> Actor:
    return Actor.of_user(request.user)


def save_formset(
    formset: BaseModelFormSet[Any, Any], *, actor: Actor, request: HttpRequest | None = None
) -> None:
    """Save an inline formset row by row through the services (deletions first). With the
    request, each row is first checked against the user's roles, as the page's own row is."""
    instances = formset.save(commit=False)
    if request is not None:
        for obj in [*formset.deleted_objects, *instances]:
            permissions.check_changeable(request, obj)
    for obj in formset.deleted_objects:
        common.delete_instance(obj, actor=actor)
    for obj in instances:
        if isinstance(obj, Budget):
            save_budget(request, obj, actor=actor)
        else:
            common.save_instance(obj, actor=actor)
    formset.save_m2m()


def save_budget(request: HttpRequest | None, budget: Budget, *, actor: Actor) -> None:
    """A budget through its service: a team lead's key budget stays within the team's."""
    lead = request is not None and permissions.as_team_lead(request, budget)
    budgets.save_budget(actor=actor, budget=budget, within_team_ceiling=lead)


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


class RoleModelAdmin(RoleAdminMixin, ModelAdminBase[M], Generic[M]):
    """A ModelAdmin that answers to the gateway's roles (governance.admin.permissions), for
    the admins that write nothing (the audit log, alert history) or write in their own way."""

    def get_queryset(self, request: HttpRequest) -> models.QuerySet[M]:
        return cast("models.QuerySet[M]", super().get_queryset(request))


class ServiceModelAdmin(RoleModelAdmin[M], Generic[M]):
    """A ModelAdmin whose writes are audited service calls, never Model.save().

    Forms validate with the model's own full_clean, so most mistakes are plain form errors. A
    check that only a service knows (raised as ValidationError while saving) rolls the whole
    save back, and the form is shown again with that error and the user's input.
    """

    # Django 6 makes https the default; provider and MCP URLs are https nearly always.
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}

    def get_list_display(self, request: HttpRequest) -> list[Any]:
        names = list(super().get_list_display(request))
        for column in list_columns(self.model):
            at = names.index(column.after) + 1 if column.after in names else len(names)
            names.insert(at, column.name)
        return names

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        if list_columns(self.model):
            return PreparedChangeList
        return super().get_changelist(request, **kwargs)

    if not TYPE_CHECKING:
        # The admin finds a list_display entry that is not a model field as an attribute of
        # the ModelAdmin; a registered column's cell is found here. Hidden from the type
        # checker, which would otherwise accept any attribute of every admin.
        def __getattr__(self, name: str) -> Any:
            model = self.__dict__.get("model")
            for column in list_columns(model) if model is not None else ():
                if column.name == name:
                    return column.cell
            # A page the user may only read shows its dollar fields through these.
            cell = permissions.money_display(type(self).form, name)
            if cell is not None:
                return cell
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

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
        save_formset(formset, actor=actor_for(request), request=request)

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
