"""Django's User and Group admins, with the signed-in admin as the actor of the audit events
their changes write (governance/services/users.py records them from model signals)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.contrib import admin
from django.contrib.auth import admin as auth_admin
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.http import HttpRequest, HttpResponse

from governance.admin.base import actor_for
from governance.admin.permissions import RoleAdminMixin
from governance.services import users

if TYPE_CHECKING:
    UserAdminBase = auth_admin.UserAdmin[Any]
    GroupAdminBase = auth_admin.GroupAdmin
else:
    UserAdminBase = auth_admin.UserAdmin
    GroupAdminBase = auth_admin.GroupAdmin


class ActingAdminMixin:
    """Runs every view that can write (add, change, delete, bulk actions) as the request's user."""

    def changeform_view(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        with users.acting_as(actor_for(request)):
            response: HttpResponse = super().changeform_view(request, *args, **kwargs)  # type: ignore[misc]
        return response

    def changelist_view(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        with users.acting_as(actor_for(request)):
            response: HttpResponse = super().changelist_view(request, *args, **kwargs)  # type: ignore[misc]
        return response

    def delete_view(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        with users.acting_as(actor_for(request)):
            response: HttpResponse = super().delete_view(request, *args, **kwargs)  # type: ignore[misc]
        return response


class AuditedUserAdmin(RoleAdminMixin, ActingAdminMixin, UserAdminBase):
    def user_change_password(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        with users.acting_as(actor_for(request)):
            return super().user_change_password(request, *args, **kwargs)


class AuditedGroupAdmin(RoleAdminMixin, ActingAdminMixin, GroupAdminBase):
    pass


def _replace(model: type[Any], model_admin: type[admin.ModelAdmin[Any]]) -> None:
    if admin.site.is_registered(model):
        admin.site.unregister(model)
    admin.site.register(model, model_admin)


_replace(get_user_model(), AuditedUserAdmin)
_replace(Group, AuditedGroupAdmin)
