"""The admin asks the gateway's roles (governance.access), never Django's model permissions.

Every list, autocomplete and foreign-key menu holds only the rows the user may see; a row they
may see but not change opens read-only; "add" is offered where they could create such a row
somewhere, and what they submit is checked once more as the row it would become (a team lead
adding a key to another team is refused with a form error). Superusers are platform admins
everywhere. Models without an access rule are for superusers alone.

The mixins here carry no admin base of their own, so governance.admin.base can put them in
front of its ModelAdmin and inline bases, and the User and Group admins in front of Django's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from django.contrib import admin
from django.contrib.admin.utils import NotRelationField, get_fields_from_path
from django.core.exceptions import FieldDoesNotExist, ValidationError
from django.db import models
from django.db.models import QuerySet
from django.forms.models import _get_foreign_key
from django.http import HttpRequest, HttpResponse

from governance.access import Access, Action, has_rule
from governance.forms import organization_of
from governance.models import Budget, Role
from governance.money import format_usd

REFUSED = "Outside what your role lets you change: choose an organization, team or key of your own."


def access_of(request: HttpRequest) -> Access:
    return Access.of(request.user)


def allows(request: HttpRequest, model: type[models.Model], action: Action) -> bool:
    """Whether the user may `action` some rows of `model` (models without a rule: superusers)."""
    access = access_of(request)
    if not has_rule(model):
        return access.superuser
    return access.allows(model, action)


def may(request: HttpRequest, action: Action, obj: models.Model) -> bool:
    access = access_of(request)
    if not has_rule(type(obj)):
        return access.superuser
    return access.can(action, obj)


def visible(request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
    access = access_of(request)
    if not has_rule(queryset.model):
        return queryset if access.superuser else queryset.none()
    return access.visible(queryset)


def changeable(request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
    access = access_of(request)
    if not has_rule(queryset.model):
        return queryset if access.superuser else queryset.none()
    return access.changeable(queryset)


def check_changeable(request: HttpRequest, obj: models.Model) -> None:
    """Refuse to write a row (saved or about to be created) the user may not change."""
    if not may(request, "change", obj):
        raise ValidationError(REFUSED)


def as_team_lead(request: HttpRequest, budget: Budget) -> bool:
    """Whether the user changes this budget only as a team lead (held to the team's ceiling)."""
    organizations = access_of(request).organizations((Role.PLATFORM_ADMIN, Role.FINANCE))
    return not organizations.covers(budget.organization_id)


def field_choices(
    request: HttpRequest, db_field: Any, queryset: QuerySet[Any] | None, db: str | None
) -> QuerySet[Any] | None:
    """A foreign key's or many-to-many's choices, narrowed to the related rows the user sees."""
    model = db_field.remote_field.model
    if not has_rule(model):
        return queryset
    if queryset is None:
        queryset = model._default_manager.using(db).all()
    return visible(request, queryset)


class VisibleRelatedListFilter(admin.RelatedFieldListFilter):
    """A changelist filter on a relation offering only the related rows the user may see (the
    stock one names every organization and team)."""

    def field_choices(self, field: Any, request: HttpRequest, model_admin: Any) -> Any:
        model = field.related_model
        if not has_rule(model):
            return super().field_choices(field, request, model_admin)
        ordering = self.field_admin_ordering(field, request, model_admin)
        shown = visible(request, model._default_manager.all()).values("pk")
        return field.get_choices(
            include_blank=False, ordering=ordering, limit_choices_to={"pk__in": shown}
        )


def visible_list_filter(model: type[models.Model], entries: Any) -> list[Any]:
    """`list_filter` with each plain relation entry filtered by VisibleRelatedListFilter."""
    return [
        (entry, VisibleRelatedListFilter) if _is_relation(model, entry) else entry
        for entry in entries
    ]


def _is_relation(model: type[models.Model], entry: Any) -> bool:
    if not isinstance(entry, str):
        return False
    try:
        return bool(get_fields_from_path(model, entry)[-1].is_relation)
    except (FieldDoesNotExist, NotRelationField):
        return False


def money_display(form_class: Any, name: str) -> Callable[[Any], str] | None:
    """A read-only stand-in for a dollar field of a UsdFieldsForm (not a model field): a page
    the user may only read still shows the amount."""
    micros_field = getattr(form_class, "usd_fields", {}).get(name)
    if micros_field is None:
        return None
    label = getattr(form_class.base_fields.get(name), "label", None) or name

    @admin.display(description=label)
    def cell(obj: Any) -> str:
        micros = getattr(obj, micros_field, None)
        return "-" if micros is None else format_usd(micros)

    return cell


def child_of(inline: Any, parent: models.Model) -> models.Model:
    """An unsaved row of an inline's model under `parent`, placed as the formset places it
    (its organization taken from the parent), to ask whether rows there may be changed."""
    fk = _get_foreign_key(inline.parent_model, inline.model, fk_name=inline.fk_name)
    child: models.Model = inline.model(**{fk.name: parent})
    organization = organization_of(parent)
    if fk.name != "organization" and organization is not None and _has_field(child):
        child.organization = organization  # type: ignore[attr-defined]
    return child


def _has_field(obj: models.Model, name: str = "organization") -> bool:
    try:
        obj._meta.get_field(name)
    except FieldDoesNotExist:
        return False
    return True


class _VisibleRows:
    """Rows, and the choices of foreign-key fields, limited to what the user may see."""

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        return visible(request, super().get_queryset(request))  # type: ignore[misc]

    def get_field_queryset(
        self, db: str | None, db_field: Any, request: HttpRequest
    ) -> QuerySet[Any] | None:
        queryset = super().get_field_queryset(db, db_field, request)  # type: ignore[misc]
        return field_choices(request, db_field, queryset, db)


class RoleAdminMixin(_VisibleRows):
    """Role checks for a ModelAdmin: put in front of the admin base class."""

    model: Any

    def has_module_permission(self, request: HttpRequest) -> bool:
        return access_of(request).has_any_role

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        if obj is None:
            return allows(request, self.model, "view")
        return may(request, "view", obj)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        if obj is None:
            return allows(request, self.model, "change")
        return may(request, "change", obj)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return RoleAdminMixin.has_change_permission(self, request, obj)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return allows(request, self.model, "change")

    def get_list_filter(self, request: HttpRequest) -> Any:
        return visible_list_filter(self.model, super().get_list_filter(request))  # type: ignore[misc]

    def save_form(self, request: HttpRequest, form: Any, change: bool) -> Any:
        """The submitted row, refused when it lies outside what the user may change."""
        obj = super().save_form(request, form, change)  # type: ignore[misc]
        check_changeable(request, self.access_subject(request, obj))
        return obj

    def access_subject(self, request: HttpRequest, obj: Any) -> models.Model:
        """The row a submitted form stands for, as the access check should see it (an admin
        whose service fills fields in on save fills them in here first)."""
        return obj  # type: ignore[no-any-return]

    def response_action(
        self, request: HttpRequest, queryset: QuerySet[Any], *args: Any, **kwargs: Any
    ) -> HttpResponse | None:
        # Actions write: they get the selected rows the user may change, and no others.
        narrowed = changeable(request, queryset)
        response: HttpResponse | None = super().response_action(  # type: ignore[misc]
            request, narrowed, *args, **kwargs
        )
        return response


class RoleInlineMixin(_VisibleRows):
    """Role checks for an inline: rows the user sees; editable where they may change rows under
    this parent (and the parent itself, or the page could not be saved)."""

    model: Any

    def _may_change_under(self, request: HttpRequest, parent: Any) -> bool:
        if parent is None:
            return allows(request, self.model, "change")
        return may(request, "change", parent) and may(request, "change", child_of(self, parent))

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return allows(request, self.model, "view")

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self._may_change_under(request, obj)

    def has_add_permission(self, request: HttpRequest, obj: Any) -> bool:
        return self._may_change_under(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self._may_change_under(request, obj)

    if not TYPE_CHECKING:
        # A read-only inline shows its dollar fields through these (see money_display).
        def __getattr__(self, name: str) -> Any:
            cell = money_display(type(self).form, name)
            if cell is None:
                raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
            return cell
