"""MCP servers the gateway's /mcp endpoint aggregates, what they cost, and who may use their tools.

A server is reached over Streamable HTTP (`url`) or launched by the gateway over stdio
(`command` + `args` + `env`). Its secrets (HTTP headers, stdio environment variables) are
Fernet-encrypted at rest like provider credentials and never shown again.

Tool calls are priced per call plus per started kilobyte of the result, in integer
micro-dollars: the server's price, or the first tool price pattern (by position) that matches.

Grants give an organization, a team, a project or a key the tools of one server (shell
patterns, allow and deny). A tool is usable when some level grants its server, every level that
has a grant for the server allows the tool, and no grant denies it (governance.policy).
"""

from __future__ import annotations

import re
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q

from governance import outbound
from governance.models.base import TimestampedModel, owner_scope
from governance.models.keys import VirtualKey
from governance.models.orgs import Organization, Project, Team
from governance.validators import validate_pattern_list

ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# RFC 9110 token characters: what an HTTP header name may be made of.
HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
# Headers the gateway's MCP client sets itself: a configured value would break the protocol.
RESERVED_HEADERS = frozenset(
    {
        "host",
        "content-length",
        "content-type",
        "accept",
        "connection",
        "transfer-encoding",
        "mcp-session-id",
        "mcp-protocol-version",
        "mcp-method",
        "mcp-name",
        "last-event-id",
    }
)
MAX_TIMEOUT_SECONDS = 3600


def validate_server_name(value: str) -> None:
    # Tools reach clients as `<server>__<tool>`: a "__" inside the server's name would make
    # that name ambiguous to anyone reading it.
    if "__" in value:
        raise ValidationError('must not contain "__" (it separates server and tool names)')


def validate_args(value: Any) -> None:
    if not isinstance(value, list) or not all(isinstance(arg, str) for arg in value):
        raise ValidationError('must be a list of arguments, e.g. ["-y", "@scope/server"]')


def validate_env(value: Any) -> None:
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and ENV_NAME.match(k) and isinstance(v, str) for k, v in value.items()
    ):
        raise ValidationError('must map variable names to text, e.g. {"LOG_LEVEL": "info"}')


def check_header_name(name: str) -> str:
    """A header name a server's credentials may set, or a ValidationError saying why not."""
    if not HEADER_NAME.match(name):
        raise ValidationError(f"{name!r} is not a valid HTTP header name")
    if name.lower() in RESERVED_HEADERS:
        raise ValidationError(f"{name} is set by the gateway itself")
    return name


def check_env_name(name: str) -> str:
    if not ENV_NAME.match(name):
        raise ValidationError(f"{name!r} is not a valid environment variable name")
    return name


class MCPServer(TimestampedModel):
    """An upstream MCP server: reached over Streamable HTTP, or launched over stdio."""

    class Transport(models.TextChoices):
        HTTP = "http", "Streamable HTTP (url)"
        STDIO = "stdio", "stdio (a command the gateway launches)"

    name = models.SlugField(max_length=64, unique=True, validators=[validate_server_name])
    transport = models.CharField(max_length=5, choices=Transport.choices, default=Transport.HTTP)
    url = models.URLField(max_length=500, blank=True, help_text="http: the server's MCP endpoint.")
    command = models.CharField(
        max_length=500, blank=True, help_text="stdio: the program to run, e.g. npx."
    )
    args = models.JSONField(
        default=list, blank=True, validators=[validate_args], help_text="stdio: its arguments."
    )
    env = models.JSONField(
        default=dict,
        blank=True,
        validators=[validate_env],
        help_text="stdio: non-secret environment variables (secrets go to the credentials).",
    )
    timeout_seconds = models.PositiveIntegerField(
        default=60,
        validators=[MinValueValidator(1), MaxValueValidator(MAX_TIMEOUT_SECONDS)],
        help_text="How long one call to the server may take.",
    )
    code_mode = models.BooleanField(
        default=False, help_text="Expose the server's tools through code-mode meta-tools."
    )
    price_per_call_micros = models.BigIntegerField(
        default=0, help_text="Micro-dollars per tool call (1 USD = 1,000,000)."
    )
    price_per_kb_micros = models.BigIntegerField(
        default=0, help_text="Micro-dollars per started kilobyte (1024 bytes) of a call's result."
    )
    # {"header:<name>": value, "env:<NAME>": value}, Fernet-encrypted (governance.crypto).
    credentials_encrypted = models.TextField(blank=True, editable=False)
    enabled = models.BooleanField(default=True)

    class Meta:
        verbose_name = "MCP server"
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=Q(price_per_call_micros__gte=0, price_per_kb_micros__gte=0),
                name="mcpserver_price_not_negative",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def has_credentials(self) -> bool:
        return bool(self.credentials_encrypted)

    @property
    def destination(self) -> tuple[str, ...]:
        """Where the server's credentials go: its URL, or the command that receives them."""
        if self.transport == self.Transport.STDIO:
            return (self.command.strip(), *(str(arg) for arg in self.args or []))
        return (self.url.strip(),)

    def clean(self) -> None:
        # Admin, apply_config and the services all validate through here (full_clean).
        if self.transport == self.Transport.HTTP:
            self._check_http()
        else:
            self._check_stdio()

    def _check_http(self) -> None:
        errors: dict[str, str] = {}
        if not self.url:
            errors["url"] = "an HTTP server needs its MCP endpoint, e.g. https://mcp.example/mcp"
        if self.command or self.args or self.env:
            errors["command"] = "command, args and env are for stdio servers only"
        if errors:
            raise ValidationError(errors)
        outbound.check_field(self.url, "url")

    def _check_stdio(self) -> None:
        errors: dict[str, str] = {}
        if not settings.GATEWAY_MCP_STDIO:
            errors["transport"] = (
                "stdio servers are turned off on this gateway (GATEWAY_MCP_STDIO=false); "
                "register the server's Streamable HTTP endpoint instead"
            )
        if not self.command.strip():
            errors["command"] = "a stdio server needs the program to run, e.g. npx"
        if self.url:
            errors["url"] = "a stdio server has no URL (the gateway launches it)"
        if errors:
            raise ValidationError(errors)


class MCPToolPrice(TimestampedModel):
    """A price for the tools of one server whose names match `tool_pattern`; the first match
    by position wins over the server's own price."""

    server = models.ForeignKey(MCPServer, on_delete=models.CASCADE, related_name="tool_prices")
    tool_pattern = models.CharField(max_length=200, help_text="A shell pattern, e.g. search_*.")
    per_call_micros = models.BigIntegerField(default=0)
    per_kb_micros = models.BigIntegerField(default=0)
    position = models.PositiveIntegerField(default=0, help_text="Lower is matched first.")

    class Meta:
        verbose_name = "MCP tool price"
        ordering = ["server", "position", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["server", "tool_pattern"], name="mcptoolprice_unique_pattern"
            ),
            models.CheckConstraint(
                condition=Q(per_call_micros__gte=0, per_kb_micros__gte=0),
                name="mcptoolprice_not_negative",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.server.name}: {self.tool_pattern}"


OWNER_FIELDS = ("organization", "team", "project", "virtual_key")


def _one_owner() -> Q:
    condition = Q()
    for owner in OWNER_FIELDS:
        others = {f"{other}__isnull": True for other in OWNER_FIELDS if other != owner}
        condition |= Q(**{f"{owner}__isnull": False}, **others)
    return condition


class MCPToolGrant(TimestampedModel):
    """Tools of one MCP server an organization, team, project or key may list and call.

    `tool_patterns` allows, `denied_patterns` denies (shell patterns); an empty allow list
    allows nothing at this level, so a key's grant with no tools shuts the server off for it.
    """

    server = models.ForeignKey(MCPServer, on_delete=models.CASCADE, related_name="grants")
    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, null=True, blank=True, related_name="mcp_grants"
    )
    team = models.ForeignKey(
        Team, on_delete=models.CASCADE, null=True, blank=True, related_name="mcp_grants"
    )
    project = models.ForeignKey(
        Project, on_delete=models.CASCADE, null=True, blank=True, related_name="mcp_grants"
    )
    virtual_key = models.ForeignKey(
        VirtualKey, on_delete=models.CASCADE, null=True, blank=True, related_name="mcp_grants"
    )
    tool_patterns = models.JSONField(
        "allowed tools", default=list, blank=True, validators=[validate_pattern_list]
    )
    denied_patterns = models.JSONField(
        "denied tools", default=list, blank=True, validators=[validate_pattern_list]
    )

    class Meta:
        verbose_name = "MCP tool grant"
        constraints = [
            models.CheckConstraint(condition=_one_owner(), name="mcpgrant_single_owner"),
            models.UniqueConstraint(fields=["server", "team"], name="mcpgrant_unique_team"),
            models.UniqueConstraint(fields=["server", "virtual_key"], name="mcpgrant_unique_key"),
            models.UniqueConstraint(
                fields=["server", "organization"], name="mcpgrant_unique_organization"
            ),
            models.UniqueConstraint(fields=["server", "project"], name="mcpgrant_unique_project"),
        ]

    def __str__(self) -> str:
        return f"{self.owner_label} on {self.server.name}"

    @property
    def owner(self) -> Organization | Team | Project | VirtualKey | None:
        return self.virtual_key or self.team or self.project or self.organization

    @property
    def level(self) -> str:
        return owner_scope(
            virtual_key_id=self.virtual_key_id, team_id=self.team_id, project_id=self.project_id
        )

    @property
    def owner_label(self) -> str:
        return f"{self.level} {self.owner}"

    def clean(self) -> None:
        owners = [getattr(self, f"{name}_id") for name in OWNER_FIELDS]
        if sum(owner is not None for owner in owners) != 1:
            raise ValidationError("grant to exactly one organization, team, project or key")


# --- credentials: stored as one flat mapping, used grouped ------------------------------------

HEADER_PREFIX, ENV_PREFIX = "header:", "env:"


def flat_credentials(
    *, headers: dict[str, str] | None = None, env: dict[str, str] | None = None
) -> dict[str, str]:
    """{"header:<name>": value, "env:<NAME>": value}: what governance.crypto encrypts."""
    flat = {HEADER_PREFIX + name: value for name, value in (headers or {}).items()}
    flat.update({ENV_PREFIX + name: value for name, value in (env or {}).items()})
    return flat


def grouped_credentials(flat: dict[str, str]) -> dict[str, dict[str, str]]:
    """The stored mapping as McpServerConfig.credentials: {"headers": {...}, "env": {...}}."""
    groups: dict[str, dict[str, str]] = {"headers": {}, "env": {}}
    for name, value in flat.items():
        if name.startswith(HEADER_PREFIX):
            groups["headers"][name.removeprefix(HEADER_PREFIX)] = value
        elif name.startswith(ENV_PREFIX):
            groups["env"][name.removeprefix(ENV_PREFIX)] = value
    return groups
