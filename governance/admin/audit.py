"""The audit trail: readable, filterable, and impossible to edit from the admin."""

from __future__ import annotations

import json
from typing import Any

from django.contrib import admin
from django.http import HttpRequest
from django.utils.html import format_html, format_html_join

from governance.admin.base import RoleModelAdmin
from governance.models import AuditEvent


def pretty_json(value: Any) -> str:
    if value is None:
        return "-"
    text = json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)
    return format_html('<pre style="margin:0">{}</pre>', text)


def changed_fields(event: AuditEvent) -> list[tuple[str, Any, Any]]:
    before = event.before or {}
    after = event.after or {}
    names = sorted(set(before) | set(after))
    return [(n, before.get(n), after.get(n)) for n in names if before.get(n) != after.get(n)]


def _short(value: Any) -> str:
    return "-" if value is None else json.dumps(value, ensure_ascii=False)


@admin.register(AuditEvent)
class AuditEventAdmin(RoleModelAdmin[AuditEvent]):
    list_display = ("created_at", "actor", "verb", "subject_type", "subject_repr", "short_note")
    list_filter = ("verb", "subject_type", "actor")
    search_fields = ("subject_repr", "subject_id", "actor", "note")
    date_hierarchy = "created_at"
    list_select_related = ("actor_user",)
    fieldsets = (
        (None, {"fields": ("created_at", "actor", "actor_user", "verb", "note")}),
        ("Subject", {"fields": ("subject_type", "subject_id", "subject_repr")}),
        ("What changed", {"fields": ("changes", "before_json", "after_json")}),
        ("Hash chain", {"fields": ("prev_hash", "hash", "hash_version"), "classes": ("collapse",)}),
    )
    readonly_fields = (
        "created_at",
        "actor",
        "actor_user",
        "verb",
        "note",
        "subject_type",
        "subject_id",
        "subject_repr",
        "changes",
        "before_json",
        "after_json",
        "prev_hash",
        "hash",
        "hash_version",
    )

    # Append-only: the rows are evidence, so nobody edits or deletes them here.
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: AuditEvent | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: AuditEvent | None = None) -> bool:
        return False

    @admin.display(description="note")
    def short_note(self, obj: AuditEvent) -> str:
        return obj.note if len(obj.note) <= 80 else obj.note[:79] + "…"

    @admin.display(description="changed fields")
    def changes(self, obj: AuditEvent) -> str:
        rows = changed_fields(obj)
        if not rows:
            return "-"
        body = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            ((name, _short(old), _short(new)) for name, old, new in rows),
        )
        return format_html(
            "<table><thead><tr><th>field</th><th>before</th><th>after</th></tr></thead>"
            "<tbody>{}</tbody></table>",
            body,
        )

    @admin.display(description="before")
    def before_json(self, obj: AuditEvent) -> str:
        return pretty_json(obj.before)

    @admin.display(description="after")
    def after_json(self, obj: AuditEvent) -> str:
        return pretty_json(obj.after)
