"""MCP servers and the tool grants of teams and keys."""

from __future__ import annotations

from django.contrib import admin

from governance.admin.base import ServiceModelAdmin, TabularInlineBase
from governance.forms import MCPToolGrantForm
from governance.models import MCPServer, MCPToolGrant


class MCPToolGrantInline(TabularInlineBase[MCPToolGrant, MCPServer]):
    model = MCPToolGrant
    form = MCPToolGrantForm
    fields = ("team", "virtual_key", "tool_patterns")
    autocomplete_fields = ("team", "virtual_key")
    extra = 0


@admin.register(MCPServer)
class MCPServerAdmin(ServiceModelAdmin[MCPServer]):
    list_display = ("name", "url", "code_mode", "enabled", "credentials_set")
    list_filter = ("enabled", "code_mode")
    search_fields = ("name", "url")
    fields = ("name", "url", "code_mode", "enabled", "credentials_set")
    readonly_fields = ("credentials_set",)
    inlines = (MCPToolGrantInline,)

    @admin.display(description="credentials", boolean=True)
    def credentials_set(self, obj: MCPServer) -> bool:
        return bool(obj.credentials_encrypted)


@admin.register(MCPToolGrant)
class MCPToolGrantAdmin(ServiceModelAdmin[MCPToolGrant]):
    form = MCPToolGrantForm
    list_display = ("server", "owner", "tools")
    list_filter = ("server",)
    list_select_related = (
        "server",
        "team",
        "team__organization",
        "virtual_key",
        "virtual_key__parent",
    )
    search_fields = ("server__name", "team__name", "virtual_key__name")
    autocomplete_fields = ("server", "team", "virtual_key")
    fieldsets = (
        (None, {"fields": ("server", "tool_patterns")}),
        ("Granted to (one of)", {"fields": ("team", "virtual_key")}),
    )

    @admin.display(description="granted to")
    def owner(self, obj: MCPToolGrant) -> str:
        return f"key {obj.virtual_key}" if obj.virtual_key else f"team {obj.team}"

    @admin.display(description="tools")
    def tools(self, obj: MCPToolGrant) -> str:
        return ", ".join(obj.tool_patterns)
