"""Turn a loaded document into a ConfigFile, or into errors that name line and field."""

from __future__ import annotations

import difflib
import types
from collections.abc import Hashable, Iterable, Iterator
from typing import Any, Union, get_args, get_origin

import pydantic
from pydantic import BaseModel

from governance.config.errors import Issue, Path, format_path
from governance.config.loader import Document
from governance.config.schema import (
    ENV_NAME_PATTERN,
    HEADER_NAME_PATTERN,
    KEY_NAME_PATTERN,
    PROVIDER_REF_PATTERN,
    SLUG_PATTERN,
    BudgetSpec,
    ConfigFile,
    KeySpec,
    OrganizationSpec,
)


def parse(document: Document) -> ConfigFile:
    """Validate the whole file; every problem is reported at once, each with its line."""
    if not isinstance(document.data, dict):
        raise document.lines.fail((), "the file must be a mapping (providers:, organizations:, …)")
    try:
        config = ConfigFile.model_validate(document.data)
    except pydantic.ValidationError as exc:
        raise document.lines.error(_issues(exc)) from None
    duplicates = list(find_duplicates(config))
    if duplicates:
        raise document.lines.error(duplicates)
    return config


# --- pydantic errors -> readable issues ----------------------------------------------------


def _issues(exc: pydantic.ValidationError) -> list[Issue]:
    # The offending input is never echoed: it may be a secret from the environment.
    return [Issue(tuple(err["loc"]), _message(err)) for err in exc.errors(include_input=False)]


def _message(err: Any) -> str:
    kind, ctx = err["type"], err.get("ctx") or {}
    if kind == "missing":
        return "is required"
    if kind == "extra_forbidden":
        return _unknown_field(tuple(err["loc"]))
    if kind == "literal_error":
        return "must be one of " + str(ctx.get("expected", "")).replace("'", "").replace(
            " or ", ", "
        )
    if kind in ("value_error", "assertion_error") and "error" in ctx:
        return str(ctx["error"])
    if kind == "string_pattern_mismatch":
        return {
            SLUG_PATTERN: "must contain only letters, digits, - and _",
            KEY_NAME_PATTERN: "must not contain spaces or /",
            PROVIDER_REF_PATTERN: "must be a provider name or mcp:<server>",
            ENV_NAME_PATTERN: "must be an environment variable name (letters, digits, _)",
            HEADER_NAME_PATTERN: "must be an HTTP header name",
        }.get(str(ctx.get("pattern")), str(err["msg"]))
    message = str(err["msg"])
    return message[:1].lower() + message[1:]


def _unknown_field(loc: Path) -> str:
    name = str(loc[-1])
    allowed = _fields_at(loc[:-1])
    if not allowed:
        return "unknown field"
    close = difflib.get_close_matches(name, allowed, n=1)
    hint = f"did you mean {close[0]}?" if close else "allowed: " + ", ".join(allowed)
    return f"unknown field {name!r} ({hint})"


def _fields_at(path: Path) -> list[str]:
    """The field names allowed at `path`, found by walking the schema's annotations."""
    annotation: Any = ConfigFile
    for part in path:
        annotation = _unwrap(annotation)
        origin = get_origin(annotation)
        if origin is list or origin is dict:
            annotation = get_args(annotation)[-1]
        elif _is_model(annotation) and isinstance(part, str) and part in annotation.model_fields:
            annotation = annotation.model_fields[part].annotation
        else:
            return []
    annotation = _unwrap(annotation)
    return list(annotation.model_fields) if _is_model(annotation) else []


def _unwrap(annotation: Any) -> Any:
    """`X | None` (or `Literal[...] | Model`) -> the model or collection inside it."""
    if get_origin(annotation) in (Union, types.UnionType):
        members = [a for a in get_args(annotation) if a is not type(None)]
        models = [a for a in members if _is_model(a) or get_origin(a) in (list, dict)]
        return models[0] if models else members[0]
    return annotation


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


# --- names that must be unique -------------------------------------------------------------


def _repeated(items: Iterable[tuple[Hashable, Path]], what: str) -> Iterator[Issue]:
    seen: dict[Hashable, Path] = {}
    for value, path in items:
        if value in seen:
            yield Issue(path, f"{what} appears twice (first at {format_path(seen[value])})")
        else:
            seen[value] = path


def find_duplicates(config: ConfigFile) -> Iterator[Issue]:
    yield from _repeated(
        ((p.name, ("providers", i, "name")) for i, p in enumerate(config.providers)),
        "this provider name",
    )
    yield from _repeated(
        ((r.name, ("models", i, "name")) for i, r in enumerate(config.models)), "this model name"
    )
    for i, route in enumerate(config.models):
        yield from _repeated(
            (
                ((d.provider, d.model), ("models", i, "deployments", j))
                for j, d in enumerate(route.deployments)
            ),
            "this provider and model",
        )
    yield from _repeated(
        ((s.name, ("mcp_servers", i, "name")) for i, s in enumerate(config.mcp_servers)),
        "this MCP server name",
    )
    for i, server in enumerate(config.mcp_servers):
        yield from _repeated(
            (
                (price.tool, ("mcp_servers", i, "tool_prices", j, "tool"))
                for j, price in enumerate(server.tool_prices)
            ),
            "this tool pattern",
        )
    yield from _repeated(
        (
            ((g.organization, g.team, g.project, g.key, g.server), ("mcp_grants", i))
            for i, g in enumerate(config.mcp_grants)
        ),
        "this grant",
    )
    yield from _repeated(
        ((o.name, ("organizations", i, "name")) for i, o in enumerate(config.organizations)),
        "this organization name",
    )
    for i, org in enumerate(config.organizations):
        yield from _organization_duplicates(org, ("organizations", i))


def _organization_duplicates(org: OrganizationSpec, path: Path) -> Iterator[Issue]:
    yield from _repeated(
        ((t.name, (*path, "teams", i, "name")) for i, t in enumerate(org.teams)),
        "this team name",
    )
    yield from _repeated(
        ((p.name, (*path, "projects", i, "name")) for i, p in enumerate(org.projects)),
        "this project name",
    )
    keys = list(_keys_of(org, path))
    # Keys are named per organization, wherever in the tree they are declared.
    yield from _repeated(((k.name, (*p, "name")) for k, p in keys), "this key name")
    yield from _budget_duplicates(org.budgets, (*path, "budgets"))
    for i, team in enumerate(org.teams):
        yield from _budget_duplicates(team.budgets, (*path, "teams", i, "budgets"))
    for i, project in enumerate(org.projects):
        yield from _budget_duplicates(project.budgets, (*path, "projects", i, "budgets"))
    for key, key_path in keys:
        yield from _budget_duplicates(key.budgets, (*key_path, "budgets"))
        subs = [(s, (*key_path, "sub_keys", j)) for j, s in enumerate(key.sub_keys)]
        yield from _repeated(((s.name, (*p, "name")) for s, p in subs), "this sub-key name")
        for sub, sub_path in subs:
            yield from _budget_duplicates(sub.budgets, (*sub_path, "budgets"))


def _keys_of(org: OrganizationSpec, path: Path) -> Iterator[tuple[KeySpec, Path]]:
    for i, team in enumerate(org.teams):
        for j, team_key in enumerate(team.keys):
            yield team_key, (*path, "teams", i, "keys", j)
    for i, project in enumerate(org.projects):
        for j, key in enumerate(project.keys):
            yield key, (*path, "projects", i, "keys", j)
    for j, key in enumerate(org.keys):
        yield key, (*path, "keys", j)


def _budget_duplicates(budgets: list[BudgetSpec], path: Path) -> Iterator[Issue]:
    yield from _repeated(
        ((b.identity, (*path, i)) for i, b in enumerate(budgets)),
        "a budget with this period, models and providers",
    )
