"""Claude Code's managed settings as the gateway serves them to signed-in developers: pure
functions, no ORM (the config file, the admin, the policy snapshots and the view share them).

A document is a managed-settings.json document (https://code.claude.com/docs/en/settings). The
gateway keeps two layers: an organization's base and a team's overrides (governance/models/
signin.py), merged the way Anthropic's own gateway merges its policies onto its base layer
(CLAUDE-GATEWAY.md §2 `managed`): allow-lists (`availableModels`, `permissions.allow` and
`ask`) are replaced, `permissions.deny` and the hook lists are joined, `env` is merged key by
key, and every other key is replaced by the team's value.

The keys the gateway relies on are checked (types, non-empty lists); every other key of Claude
Code's settings passes through as JSON, since the client's schema grows with each release.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    JsonValue,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

MAX_DOCUMENT_BYTES = 64 * 1024
ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
# Honoured by Claude Code only from the machine's own managed settings, never from what a
# gateway serves (CLAUDE-GATEWAY.md §1.1): accepting them here would silently do nothing.
MACHINE_ONLY_KEYS = ("forceLoginMethod", "forceLoginGatewayUrl", "gatewayInternalNetworks")
# Records merged key by key (the team's value wins per key).
MERGED_RECORDS = ("env", "modelOverrides", "skillOverrides")

ModelName = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
EnvName = Annotated[str, StringConstraints(pattern=ENV_NAME_PATTERN, max_length=200)]
PermissionRule = Annotated[str, StringConstraints(min_length=1, max_length=1000)]


class _Open(BaseModel):
    """Known keys checked, unknown keys kept (Claude Code's settings are an open schema)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    @model_validator(mode="after")
    def _extras_are_json(self) -> _Open:
        for name, value in (self.model_extra or {}).items():
            problem = _not_json(value)
            if problem:
                raise ValueError(f"{name}: {problem}")
        return self


def _not_json(value: Any, depth: int = 0) -> str:
    """Why `value` (from YAML or a form) is not plain JSON, or ""."""
    if depth > 32:
        return "nested too deeply"
    if isinstance(value, float) and not math.isfinite(value):
        return "must be a finite number"
    if value is None or isinstance(value, str | bool | int | float):
        return ""
    children: list[Any] = []
    if isinstance(value, list):
        children = value
    elif isinstance(value, dict):
        if not all(isinstance(key, str) for key in value):
            return "keys must be strings"
        children = list(value.values())
    else:
        # YAML reads 2026-01-01 as a date: quoted, it stays the string Claude Code expects.
        return f"{type(value).__name__} is not a JSON value (quote it)"
    return next((p for p in (_not_json(child, depth + 1) for child in children) if p), "")


def _env_value(value: Any) -> Any:
    # YAML reads `CLAUDE_CODE_ENABLE_TELEMETRY: 1` as a number; Claude Code wants strings.
    if isinstance(value, bool):
        raise ValueError('write true/false in quotes ("1" or "true"): environment values are text')
    if isinstance(value, int | float):
        return str(value)
    return value


EnvValue = Annotated[str, BeforeValidator(_env_value), StringConstraints(max_length=10_000)]


class Permissions(_Open):
    allow: list[PermissionRule] | None = None
    ask: list[PermissionRule] | None = None
    deny: list[PermissionRule] | None = None
    additional_directories: list[str] | None = Field(default=None, alias="additionalDirectories")
    default_mode: str | None = Field(default=None, alias="defaultMode")


class StatusLine(_Open):
    type: Literal["command"]
    command: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=4000)]
    padding: int | None = None


class Document(_Open):
    """One layer of a managed-settings document."""

    available_models: list[ModelName] | None = Field(
        default=None, alias="availableModels", min_length=1
    )
    model: ModelName | None = None
    env: dict[EnvName, EnvValue] | None = None
    permissions: Permissions | None = None
    status_line: StatusLine | None = Field(default=None, alias="statusLine")
    hooks: dict[str, list[dict[str, JsonValue]]] | None = None

    @field_validator("available_models")
    @classmethod
    def _no_repeats(cls, value: list[str] | None) -> list[str] | None:
        if value is not None:
            repeated = sorted({name for name in value if value.count(name) > 1})
            if repeated:
                raise ValueError(f"{repeated[0]!r} appears twice")
        return value

    @model_validator(mode="before")
    @classmethod
    def _no_machine_only_keys(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for name in MACHINE_ONLY_KEYS:
                if name in data:
                    raise ValueError(
                        f"{name} is honoured only in the managed-settings.json of the "
                        "developer's machine, never from the gateway: set it there"
                    )
        return data


class DocumentError(ValueError):
    """A document that is not valid; `problems` are (path, message), path like `env.FOO`."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        super().__init__(
            "; ".join(f"{path}: {message}" if path else message for path, message in problems)
        )
        self.problems = problems


def parse(document: Any) -> dict[str, Any]:
    """The document, checked and normalized (env values as text); raises DocumentError."""
    if not isinstance(document, dict):
        raise DocumentError([("", "must be a JSON object of Claude Code settings")])
    try:
        parsed = Document.model_validate(document)
    except ValidationError as exc:
        raise DocumentError(
            [(_path(err["loc"]), _message(err)) for err in exc.errors(include_input=False)]
        ) from None
    normalized: dict[str, Any] = parsed.model_dump(mode="json", by_alias=True, exclude_unset=True)
    size = len(canonical_json(normalized).encode())
    if size > MAX_DOCUMENT_BYTES:
        raise DocumentError([("", f"is {size} bytes; at most {MAX_DOCUMENT_BYTES} are served")])
    return normalized


def _path(loc: tuple[int | str, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _message(err: Any) -> str:
    ctx = err.get("ctx") or {}
    if err["type"] in ("value_error", "assertion_error") and "error" in ctx:
        return str(ctx["error"])
    message = str(err["msg"])
    return message[:1].lower() + message[1:]


# --- layers, the served envelope ------------------------------------------------------------


def merge(base: Mapping[str, Any], layer: Mapping[str, Any]) -> dict[str, Any]:
    """`layer` (a team's overrides) over `base` (the organization's), as documented above."""
    merged = copy.deepcopy(dict(base))
    for name, value in layer.items():
        below = merged.get(name)
        if name in MERGED_RECORDS and isinstance(below, dict) and isinstance(value, dict):
            merged[name] = {**below, **copy.deepcopy(value)}
        elif name == "permissions" and isinstance(below, dict) and isinstance(value, dict):
            merged[name] = _merge_permissions(below, value)
        elif name == "hooks" and isinstance(below, dict) and isinstance(value, dict):
            merged[name] = _merge_hooks(below, value)
        else:
            merged[name] = copy.deepcopy(value)
    return merged


def _merge_permissions(base: dict[str, Any], layer: dict[str, Any]) -> dict[str, Any]:
    merged = {**base, **copy.deepcopy(layer)}
    if isinstance(base.get("deny"), list) and isinstance(layer.get("deny"), list):
        merged["deny"] = list(dict.fromkeys([*base["deny"], *layer["deny"]]))
    return merged


def _merge_hooks(base: dict[str, Any], layer: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for event, entries in layer.items():
        below = merged.get(event)
        joined = (
            [*below, *entries] if isinstance(below, list) and isinstance(entries, list) else None
        )
        merged[event] = joined if joined is not None else copy.deepcopy(entries)
    return merged


def resolve(*layers: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The document the layers (base first) make, or None when no layer exists (then a
    developer gets "no managed policy", which Claude Code tells apart from an empty one)."""
    present = [layer for layer in layers if layer is not None]
    if not present:
        return None
    document: dict[str, Any] = {}
    for layer in present:
        document = merge(document, layer)
    return document


def available_models(document: Mapping[str, Any] | None) -> tuple[str, ...]:
    models = (document or {}).get("availableModels")
    return tuple(str(name) for name in models) if isinstance(models, list) else ()


def canonical_json(settings: Mapping[str, Any]) -> str:
    # Sorted keys, no whitespace, characters as they are: the form Claude Code hashes.
    return json.dumps(settings, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def checksum(settings: Mapping[str, Any]) -> str:
    return "sha256:" + hashlib.sha256(canonical_json(settings).encode()).hexdigest()


def envelope(settings: Mapping[str, Any]) -> dict[str, Any]:
    """What GET …/managed/settings answers: `uuid` and `checksum` are both the checksum, as
    the peers' gateways do (CLAUDE-GATEWAY.md §1.12, Part 2 §3)."""
    digest = checksum(settings)
    return {"uuid": digest, "checksum": digest, "settings": dict(settings)}
