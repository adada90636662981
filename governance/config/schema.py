"""The config file's shape (pydantic v2). Unknown fields are errors, so a typo is never ignored."""

from __future__ import annotations

import datetime as dt
import zoneinfo
from decimal import Decimal
from typing import Annotated, Any, Literal

from django.core.exceptions import ValidationError as DjangoValidationError
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    NonNegativeInt,
    PositiveInt,
    SecretStr,
    StringConstraints,
    field_validator,
    model_validator,
)

from governance.managed_settings import Document as ManagedSettings
from governance.money import MICROS_PER_USD, MoneyError, usd_to_micros
from governance.validators import validate_thresholds

SLUG_PATTERN = r"^[-a-zA-Z0-9_]+$"
KEY_NAME_PATTERN = r"^[^/\s]+$"
# A provider name, or "mcp:<server>" for the tool calls of an MCP server (budgets).
PROVIDER_REF_PATTERN = r"^(mcp:)?[-a-zA-Z0-9_]+$"
ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
HEADER_NAME_PATTERN = r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$"
PERIODS = ("day", "week", "month", "quarter", "lifetime")

Slug = Annotated[str, StringConstraints(pattern=SLUG_PATTERN, max_length=100)]
KeyName = Annotated[str, StringConstraints(pattern=KEY_NAME_PATTERN, max_length=100)]
Text = Annotated[str, StringConstraints(max_length=300)]
Pattern = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
ModelName = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
ProviderRef = Annotated[str, StringConstraints(pattern=PROVIDER_REF_PATTERN, max_length=100)]
ServerName = Annotated[str, StringConstraints(pattern=SLUG_PATTERN, max_length=64)]
EnvName = Annotated[str, StringConstraints(pattern=ENV_NAME_PATTERN, max_length=200)]
HeaderName = Annotated[str, StringConstraints(pattern=HEADER_NAME_PATTERN, max_length=200)]
Period = Literal["day", "week", "month", "quarter", "lifetime"]
# An identity provider's group name, compared exactly (case-sensitive) with the groups claim.
IdpGroup = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
ProviderKind = Literal[
    "anthropic", "bedrock", "vertex", "azure", "openai", "openai-compatible", "mock"
]


class Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _empty_list_may_be_null(cls, data: Any) -> Any:
        # `mcp_grants:` with every entry commented out is null in YAML: read it as empty.
        if not isinstance(data, dict):
            return data
        fields = cls.model_fields
        return {
            name: value
            for name, value in data.items()
            if value is not None or name not in fields or fields[name].default_factory is None
        }


def exact_usd(value: Any) -> Decimal:
    """A dollar amount that is a whole number of micro-dollars and not negative."""
    try:
        micros = usd_to_micros(value)
    except MoneyError as exc:
        raise ValueError(str(exc)) from None
    if micros < 0:
        raise ValueError("must not be negative")
    return Decimal(micros) / MICROS_PER_USD


# --- budgets, limits, model rules ----------------------------------------------------------


class DowngradeSpec(Spec):
    downgrade_to: ModelName


class BudgetSpec(Spec):
    amount_usd: Decimal
    period: Period = "month"
    models: list[Pattern] = Field(default_factory=list)
    providers: list[ProviderRef] = Field(default_factory=list)
    alerts: list[int] = Field(default_factory=lambda: [50, 80, 100])
    on_exhaust: Literal["block", "alert"] | DowngradeSpec = "block"

    @field_validator("amount_usd", mode="before")
    @classmethod
    def _exact_amount(cls, value: Any) -> Decimal:
        return exact_usd(value)

    @field_validator("alerts")
    @classmethod
    def _valid_thresholds(cls, value: list[int]) -> list[int]:
        try:
            validate_thresholds(value)
        except DjangoValidationError as exc:
            raise ValueError(exc.messages[0]) from None
        return value

    @field_validator("on_exhaust", mode="before")
    @classmethod
    def _exhaust_shape(cls, value: Any) -> Any:
        # Checked here so a mistake yields one clear message, not one per union member.
        if value in ("block", "alert"):
            return value
        if isinstance(value, dict) and set(value) == {"downgrade_to"}:
            return value
        if isinstance(value, dict) and "downgrade_to" in value:
            extra = ", ".join(sorted(str(k) for k in value if k != "downgrade_to"))
            raise ValueError(f"unknown field {extra} (only downgrade_to is allowed here)")
        raise ValueError("must be block, alert or {downgrade_to: MODEL}")

    @property
    def amount_micros(self) -> int:
        return usd_to_micros(self.amount_usd)

    @property
    def identity(self) -> tuple[str, tuple[str, ...], tuple[str, ...]]:
        """What makes a budget the same budget across applies, within its owner."""
        return (self.period, tuple(sorted(self.models)), tuple(sorted(self.providers)))


class RateLimitSpec(Spec):
    requests_per_minute: PositiveInt | None = None
    tokens_per_minute: PositiveInt | None = None
    concurrent: PositiveInt | None = None

    @model_validator(mode="after")
    def _something_set(self) -> RateLimitSpec:
        limits = (self.requests_per_minute, self.tokens_per_minute, self.concurrent)
        if all(limit is None for limit in limits):
            raise ValueError(
                "set at least one of requests_per_minute, tokens_per_minute, concurrent"
            )
        return self


class ModelPolicySpec(Spec):
    allow: list[Pattern] = Field(default_factory=list)
    deny: list[Pattern] = Field(default_factory=list)
    overrides: dict[Pattern, ModelName] = Field(default_factory=dict)


# --- single sign-on ------------------------------------------------------------------------


def _no_repeated_groups(groups: list[str]) -> list[str]:
    repeated = sorted({group for group in groups if groups.count(group) > 1})
    if repeated:
        raise ValueError(f"{repeated[0]!r} appears twice")
    return groups


class RoleGroupsSpec(Spec):
    """IdP groups whose members hold each role in the organization when they sign in with
    single sign-on. A team lead leads the organization's teams whose idp_groups they are in."""

    platform_admin: list[IdpGroup] = Field(default_factory=list)
    finance: list[IdpGroup] = Field(default_factory=list)
    team_lead: list[IdpGroup] = Field(default_factory=list)
    auditor: list[IdpGroup] = Field(default_factory=list)

    _unique = field_validator("platform_admin", "finance", "team_lead", "auditor")(
        _no_repeated_groups
    )

    def pairs(self) -> list[tuple[str, int, str]]:
        """(role, index, group) for every group listed, in file order."""
        return [
            (role, index, group)
            for role in ("platform_admin", "finance", "team_lead", "auditor")
            for index, group in enumerate(getattr(self, role))
        ]


# --- keys and the organization tree --------------------------------------------------------


class SubKeySpec(Spec):
    name: KeyName
    owner: Annotated[str, StringConstraints(max_length=200)] = ""
    secret: SecretStr | None = None
    expires_at: dt.datetime | None = None
    log_content: bool = False
    rate_limit: RateLimitSpec | None = None
    budgets: list[BudgetSpec] = Field(default_factory=list)
    models: ModelPolicySpec | None = None
    # Whether this key's MCP tools reach it as Code Mode meta-tools ("inherit": each server's
    # own code_mode; a sub-key left at "inherit" follows its parent key).
    mcp_code_mode: Literal["inherit", "on", "off"] = "inherit"

    @field_validator("mcp_code_mode", mode="before")
    @classmethod
    def _yaml_on_off(cls, value: Any) -> Any:
        # YAML 1.1 reads a bare on / off as a boolean.
        if isinstance(value, bool):
            return "on" if value else "off"
        return value

    @field_validator("expires_at", mode="before")
    @classmethod
    def _date_is_midnight_utc(cls, value: Any) -> Any:
        if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
            return dt.datetime.combine(value, dt.time(0), tzinfo=dt.UTC)
        return value

    @field_validator("expires_at")
    @classmethod
    def _in_utc(cls, value: dt.datetime | None) -> dt.datetime | None:
        # Stored in UTC so the same file always compares equal to the stored row; a time
        # without a zone is read as UTC.
        if value is None:
            return None
        aware = value if value.tzinfo else value.replace(tzinfo=dt.UTC)
        return aware.astimezone(dt.UTC)

    @property
    def secret_value(self) -> str:
        """The imported secret, or "" when the gateway generates one."""
        return self.secret.get_secret_value().strip() if self.secret is not None else ""


class KeySpec(SubKeySpec):
    sub_keys: list[SubKeySpec] = Field(default_factory=list)


class TeamKeySpec(KeySpec):
    project: Slug | None = Field(default=None, description="Charge this key to a project too.")


class TeamSpec(Spec):
    name: Slug
    description: Text = ""
    budgets: list[BudgetSpec] = Field(default_factory=list)
    models: ModelPolicySpec | None = None
    rate_limit: RateLimitSpec | None = None
    keys: list[TeamKeySpec] = Field(default_factory=list)
    # Single sign-on: members of these IdP groups belong to the team (its leads lead it).
    idp_groups: list[IdpGroup] = Field(default_factory=list)
    # Claude Code sign-in: the team key its developers' sub-keys hang under (default: the
    # team's only key), and the team's managed settings over the organization's.
    signin_key: KeyName | None = None
    managed_settings: ManagedSettings | None = None

    _unique_groups = field_validator("idp_groups")(_no_repeated_groups)


class ProjectSpec(Spec):
    name: Slug
    description: Text = ""
    budgets: list[BudgetSpec] = Field(default_factory=list)
    keys: list[KeySpec] = Field(default_factory=list)


class OrganizationSpec(Spec):
    name: Slug
    display_name: Annotated[str, StringConstraints(max_length=200)] = ""
    timezone: str = "UTC"
    admission_fail_mode: Literal["open", "closed"] = "closed"
    log_retention_days: PositiveInt = 90
    # A routed model without a price: refuse it (default) or price it by a fallback.
    unpriced_models: Literal["refuse", "fallback"] = "refuse"
    unpriced_fallback_model: Annotated[str, StringConstraints(max_length=200)] = ""
    # Claude Code signed in with a Claude subscription: refuse, showback or budgeted.
    subscription_traffic: Literal["refuse", "showback", "budgeted"] = "refuse"
    # Single sign-on: IdP groups -> roles in this organization.
    roles: RoleGroupsSpec = Field(default_factory=RoleGroupsSpec)
    # Claude Code sign-in: the managed settings every team's developers get (base layer).
    managed_settings: ManagedSettings | None = None
    budgets: list[BudgetSpec] = Field(default_factory=list)
    teams: list[TeamSpec] = Field(default_factory=list)
    projects: list[ProjectSpec] = Field(default_factory=list)
    keys: list[KeySpec] = Field(default_factory=list)

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        if value not in zoneinfo.available_timezones():
            raise ValueError(f"{value!r} is not an IANA time zone (e.g. Europe/Berlin)")
        return value


# --- providers, routes, MCP ----------------------------------------------------------------

CREDENTIAL_FIELDS = ("api_key", "auth_token", "access_key_id", "secret_access_key", "session_token")


class ProviderSpec(Spec):
    name: Slug
    kind: ProviderKind
    base_url: Annotated[str, StringConstraints(max_length=500)] = ""
    region: Annotated[str, StringConstraints(max_length=50)] = ""
    api_key: SecretStr | None = None
    auth_token: SecretStr | None = None
    access_key_id: SecretStr | None = None
    secret_access_key: SecretStr | None = None
    session_token: SecretStr | None = None
    credentials: dict[str, SecretStr] = Field(
        default_factory=dict, description="Other secret fields, e.g. a Vertex service account."
    )
    settings: dict[str, JsonValue] = Field(default_factory=dict, description="Non-secret extras.")
    enabled: bool = True

    def credential_values(self) -> dict[str, str]:
        """Every credential given a non-empty value (an unset `${VAR:-}` counts as absent)."""
        values = {name: secret.get_secret_value() for name, secret in self.credentials.items()}
        for name in CREDENTIAL_FIELDS:
            secret = getattr(self, name)
            if secret is not None:
                values[name] = secret.get_secret_value()
        return {name: value for name, value in values.items() if value}


class DeploymentSpec(Spec):
    provider: Slug
    model: ModelName
    weight: PositiveInt = 1
    position: NonNegativeInt | None = None
    enabled: bool = True


class RouteSpec(Spec):
    name: ModelName
    description: Text = ""
    deployments: list[DeploymentSpec] = Field(min_length=1)


class MCPToolPriceSpec(Spec):
    tool: Pattern
    per_call_usd: Decimal = Decimal(0)
    per_kb_usd: Decimal = Decimal(0)

    @field_validator("per_call_usd", "per_kb_usd", mode="before")
    @classmethod
    def _exact_price(cls, value: Any) -> Decimal:
        return exact_usd(value)

    @property
    def per_call_micros(self) -> int:
        return usd_to_micros(self.per_call_usd)

    @property
    def per_kb_micros(self) -> int:
        return usd_to_micros(self.per_kb_usd)


class MCPServerSpec(Spec):
    """An MCP server over Streamable HTTP (`url`) or launched over stdio (`command`)."""

    name: ServerName
    transport: Literal["http", "stdio"] | None = Field(
        default=None, description="Default: stdio when a command is given, else http."
    )
    url: Annotated[str, StringConstraints(max_length=500)] = ""
    command: Annotated[str, StringConstraints(max_length=500)] = ""
    args: list[str] = Field(default_factory=list)
    env: dict[EnvName, str] = Field(default_factory=dict, description="Non-secret (stdio).")
    # Secrets, encrypted at rest: HTTP headers sent upstream, environment of a stdio server.
    headers: dict[HeaderName, SecretStr] = Field(default_factory=dict)
    secret_env: dict[EnvName, SecretStr] = Field(default_factory=dict)
    timeout_seconds: Annotated[int, Field(ge=1, le=3600)] = 60
    code_mode: bool = False
    per_call_usd: Decimal = Decimal(0)
    per_kb_usd: Decimal = Decimal(0)
    tool_prices: list[MCPToolPriceSpec] = Field(default_factory=list)
    enabled: bool = True

    @field_validator("name")
    @classmethod
    def _no_separator(cls, value: str) -> str:
        if "__" in value:
            raise ValueError('must not contain "__" (it separates server and tool names)')
        return value

    @field_validator("per_call_usd", "per_kb_usd", mode="before")
    @classmethod
    def _exact_price(cls, value: Any) -> Decimal:
        return exact_usd(value)

    @model_validator(mode="after")
    def _transport_fields(self) -> MCPServerSpec:
        if self.kind == "http":
            if not self.url:
                raise ValueError("an HTTP server needs url: (or command: for a stdio server)")
            extra = [n for n in ("command", "args", "env", "secret_env") if getattr(self, n)]
            if extra:
                raise ValueError(f"{', '.join(extra)}: only for stdio servers")
        else:
            if not self.command.strip():
                raise ValueError("a stdio server needs command:")
            extra = [n for n in ("url", "headers") if getattr(self, n)]
            if extra:
                raise ValueError(f"{', '.join(extra)}: only for HTTP servers")
        return self

    @property
    def kind(self) -> str:
        return self.transport or ("stdio" if self.command else "http")

    @property
    def per_call_micros(self) -> int:
        return usd_to_micros(self.per_call_usd)

    @property
    def per_kb_micros(self) -> int:
        return usd_to_micros(self.per_kb_usd)

    @property
    def destination(self) -> tuple[str, ...]:
        """Where credentials go (MCPServer.destination)."""
        if self.kind == "stdio":
            return (self.command.strip(), *self.args)
        return (self.url.strip(),)

    def credential_values(self) -> tuple[dict[str, str], dict[str, str]]:
        """(headers, secret environment) given a non-empty value (an unset `${VAR:-}` counts
        as absent)."""
        headers = {name: secret.get_secret_value() for name, secret in self.headers.items()}
        env = {name: secret.get_secret_value() for name, secret in self.secret_env.items()}
        return (
            {name: value for name, value in headers.items() if value},
            {name: value for name, value in env.items() if value},
        )


class MCPGrantSpec(Spec):
    """Tools of one server for an organization, or (named with it when ambiguous) a team, a
    project or a key ("vk-backend/alice" for a sub-key)."""

    organization: Slug | None = None
    team: Slug | None = None
    project: Slug | None = None
    key: Annotated[str, StringConstraints(min_length=1)] | None = None
    server: ServerName
    tools: list[Pattern]
    deny: list[Pattern] = Field(default_factory=list)

    @model_validator(mode="after")
    def _one_owner(self) -> MCPGrantSpec:
        named = [n for n in ("team", "project", "key") if getattr(self, n) is not None]
        if len(named) > 1:
            raise ValueError("name at most one of team, project or key")
        if not named and self.organization is None:
            raise ValueError("name an organization, a team, a project or a key")
        return self

    @property
    def level(self) -> str:
        for name in ("key", "team", "project"):
            if getattr(self, name) is not None:
                return name
        return "organization"


class ConfigFile(Spec):
    providers: list[ProviderSpec] = Field(default_factory=list)
    models: list[RouteSpec] = Field(default_factory=list)
    organizations: list[OrganizationSpec] = Field(default_factory=list)
    mcp_servers: list[MCPServerSpec] = Field(default_factory=list)
    mcp_grants: list[MCPGrantSpec] = Field(default_factory=list)
