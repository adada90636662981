"""MCP servers (write-only credentials, tool prices), the tool grants of organizations, teams,
projects and keys, and the "MCP tools this key can see" preview on a key's page."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from governance import policy, snapshots
from governance.admin.base import ServiceModelAdmin, TabularInlineBase, actor_for
from governance.forms import MCPServerForm, MCPToolGrantForm, MCPToolPriceForm
from governance.models import MCPServer, MCPToolGrant, MCPToolPrice, VirtualKey
from governance.money import format_usd
from governance.policy import KeyPolicy, McpServerConfig, ToolGrantRule
from governance.services import mcp

GRANT_OWNERS = ("organization", "team", "project", "virtual_key")
GRANT_RELATED = (
    "server",
    "organization",
    "team",
    "team__organization",
    "project",
    "project__organization",
    "virtual_key",
    "virtual_key__parent",
)
# A preview lists at most this many tools per server; the rest are counted.
PREVIEW_TOOLS = 50


class MCPToolPriceInline(TabularInlineBase[MCPToolPrice, MCPServer]):
    model = MCPToolPrice
    form = MCPToolPriceForm
    fields = ("tool_pattern", "per_call_usd", "per_kb_usd", "position")
    ordering = ("position", "id")
    extra = 0
    verbose_name_plural = "tool prices (first matching pattern, by position, wins)"


class MCPToolGrantInline(TabularInlineBase[MCPToolGrant, MCPServer]):
    model = MCPToolGrant
    form = MCPToolGrantForm
    fields = (*GRANT_OWNERS, "tool_patterns", "denied_patterns")
    autocomplete_fields = GRANT_OWNERS
    extra = 0


def _price(per_call: int, per_kb: int) -> str:
    parts = [f"{format_usd(per_call)} a call"] if per_call else []
    if per_kb:
        parts.append(f"{format_usd(per_kb)} a KB")
    return " + ".join(parts) or "free"


@admin.register(MCPServer)
class MCPServerAdmin(ServiceModelAdmin[MCPServer]):
    form = MCPServerForm
    list_display = ("name", "transport", "where", "code_mode", "price", "enabled")
    list_filter = ("transport", "enabled", "code_mode")
    search_fields = ("name", "url", "command")
    readonly_fields = ("credentials_set",)
    inlines = (MCPToolPriceInline, MCPToolGrantInline)

    def get_fieldsets(self, request: HttpRequest, obj: MCPServer | None = None) -> Any:
        # The fields of the other transport stay on the page (to switch), folded away.
        stdio = obj is not None and obj.transport == MCPServer.Transport.STDIO
        fold = ("collapse",)
        return [
            (None, {"fields": ("name", "transport", "enabled", "code_mode", "timeout_seconds")}),
            (
                "Streamable HTTP",
                {"fields": ("url",), "classes": fold if stdio else ()},
            ),
            (
                "stdio (a command the gateway launches)",
                {
                    "fields": ("command", "args", "env"),
                    "classes": () if stdio else fold,
                    "description": "It runs on the gateway's hosts with the gateway's rights. "
                    'args is a JSON list (["-y", "@scope/server"]), env a JSON mapping of '
                    "non-secret variables.",
                },
            ),
            ("Price", {"fields": ("price_per_call_usd", "price_per_kb_usd")}),
            (
                "Credentials",
                {
                    "fields": (
                        "credentials_set",
                        "new_headers",
                        "new_secret_env",
                        "forget_credentials",
                    ),
                    "description": "Stored encrypted and never shown again; sent to the server "
                    "only, never the client's key. Fill in only what changes.",
                },
            ),
        ]

    @admin.display(description="where")
    def where(self, obj: MCPServer) -> str:
        if obj.transport == MCPServer.Transport.STDIO:
            return " ".join(obj.destination)
        return obj.url

    @admin.display(description="price")
    def price(self, obj: MCPServer) -> str:
        return _price(obj.price_per_call_micros, obj.price_per_kb_micros)

    @admin.display(description="credentials set")
    def credentials_set(self, obj: MCPServer) -> str:
        try:
            names = mcp.credential_names(obj)
        except ImproperlyConfigured:
            return "stored, but cannot be decrypted (GATEWAY_ENCRYPTION_KEY changed?)"
        return ", ".join(map(mcp.credential_label, names)) or "none"

    def save_model(self, request: HttpRequest, obj: MCPServer, form: Any, change: Any) -> None:
        mcp.save_server(
            actor=actor_for(request),
            server=obj,
            updates=form.credential_updates(),
            remove=form.credentials_to_forget(),
        )


@admin.register(MCPToolGrant)
class MCPToolGrantAdmin(ServiceModelAdmin[MCPToolGrant]):
    form = MCPToolGrantForm
    list_display = ("server", "owner", "tools", "denied")
    list_filter = ("server",)
    list_select_related = GRANT_RELATED
    search_fields = (
        "server__name",
        "organization__name",
        "team__name",
        "project__name",
        "virtual_key__name",
    )
    autocomplete_fields = ("server", *GRANT_OWNERS)
    fieldsets = (
        (None, {"fields": ("server", "tool_patterns", "denied_patterns")}),
        (
            "Granted to (one of)",
            {
                "fields": GRANT_OWNERS,
                "description": "Every level with a grant for the server must allow a tool "
                "(a key narrows its team, a sub-key its key); a deny anywhere wins.",
            },
        ),
    )

    @admin.display(description="granted to")
    def owner(self, obj: MCPToolGrant) -> str:
        return obj.owner_label

    @admin.display(description="allowed tools")
    def tools(self, obj: MCPToolGrant) -> str:
        return ", ".join(obj.tool_patterns) or "none"

    @admin.display(description="denied tools")
    def denied(self, obj: MCPToolGrant) -> str:
        return ", ".join(obj.denied_patterns) or "-"


# --- the key's preview ------------------------------------------------------------------------


def key_tools_preview(key: VirtualKey) -> SafeString:
    """What the key's MCP clients are offered, from the same policy snapshot the gateway uses:
    per granted (enabled) server, the tools it may call when the server's tool list is known
    (the gateway remembers what servers list), else the grants' patterns."""
    if key.pk is None:
        return format_html("{}", "-")
    key_policy = snapshots.build_key_policy(key.lookup_hash)
    if key_policy is None:
        return format_html("{}", "None: the key (or its parent key) is revoked.")
    servers = {
        server.name: server
        for server in MCPServer.objects.filter(enabled=True, name__in=key_policy.granted_servers())
    }
    if not servers:
        return format_html("{}", "None: no grant of its organization, team, project or key.")
    return format_html(
        '<ul class="mcp-tools-preview">{}</ul>',
        format_html_join(
            "",
            "<li>{}</li>",
            ((_server_preview(key_policy, servers[name]),) for name in sorted(servers)),
        ),
    )


def _server_preview(key_policy: KeyPolicy, server: MCPServer) -> SafeString:
    config = McpServerConfig(
        name=server.name, transport=server.transport, code_mode=server.code_mode
    )
    mode = " (Code Mode)" if key_policy.uses_code_mode(config) else ""
    known = policy.known_mcp_tools(server.name)
    if known is None:
        grants = [g for g in key_policy.tool_grants if g.server == server.name]
        return format_html(
            "<strong>{}</strong>{}: tool list not seen yet; the grants allow {}",
            server.name,
            mode,
            "; ".join(_grant_summary(grant) for grant in grants),
        )
    allowed = key_policy.allowed_tools(server.name, known)
    shown = ", ".join(allowed[:PREVIEW_TOOLS]) or "no tool"
    more = f" and {len(allowed) - PREVIEW_TOOLS} more" if len(allowed) > PREVIEW_TOOLS else ""
    return format_html(
        "<strong>{}</strong>{}: {} of {} tools: {}{}",
        server.name,
        mode,
        len(allowed),
        len(known),
        shown,
        more,
    )


def _grant_summary(grant: ToolGrantRule) -> str:
    allowed = ", ".join(grant.allowed) or "nothing"
    denied = f" except {', '.join(grant.denied)}" if grant.denied else ""
    return f"{allowed}{denied} ({grant.level} {grant.owner_name})"
