"""MCP servers (credentials encrypted at rest and never echoed), tool prices and tool grants.

Every write is audited and invalidates the policy snapshots on commit (common.save_instance),
so a revoked grant reaches every gateway within the policy refresh interval.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from django.core.exceptions import ValidationError
from django.db import transaction

from governance import crypto
from governance.actors import Actor
from governance.models import MCPServer, MCPToolGrant, MCPToolPrice
from governance.models.tools import (
    ENV_PREFIX,
    HEADER_PREFIX,
    check_env_name,
    check_header_name,
    flat_credentials,
)
from governance.services import common
from governance.services import credentials as credentials_service

MOVED_CREDENTIALS = (
    "re-enter the credentials when changing where the server is (its URL, or the command and "
    "arguments that receive them), or remove them: stored credentials are never sent to a new "
    "destination their owner did not confirm"
)


@dataclass(frozen=True, slots=True)
class ToolPriceSpec:
    """One tool price, in the order it is matched."""

    tool_pattern: str
    per_call_micros: int = 0
    per_kb_micros: int = 0


# --- credentials ------------------------------------------------------------------------------


def credential_names(server: MCPServer) -> list[str]:
    """Names of the stored credentials ("header:Authorization", "env:GITHUB_TOKEN"), never
    their values. Raises ImproperlyConfigured when they cannot be decrypted."""
    return sorted(crypto.decrypt_credentials(server.credentials_encrypted))


def checked_credentials(
    *, headers: Mapping[str, str] | None = None, env: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Headers and environment variables as the flat stored mapping, names validated; entries
    with an empty value are left out (an unset `${VAR:-}` means "not given")."""
    errors: list[str] = []
    kept_headers: dict[str, str] = {}
    kept_env: dict[str, str] = {}
    for names, check, kept in (
        (headers or {}, check_header_name, kept_headers),
        (env or {}, check_env_name, kept_env),
    ):
        for name, value in names.items():
            try:
                check(name)
            except ValidationError as exc:
                errors.extend(exc.messages)
                continue
            if value:
                kept[name] = value
    if errors:
        raise ValidationError({"credentials": errors})
    return flat_credentials(headers=kept_headers, env=kept_env)


def set_credentials(*, actor: Actor, server: MCPServer, credentials: dict[str, str]) -> bool:
    """Store `credentials` (the flat mapping) if they differ from the server's; saves its other
    fields with them when it writes. Returns whether it wrote."""
    return credentials_service.store(actor=actor, instance=server, credentials=credentials)


def save_server(
    *,
    actor: Actor,
    server: MCPServer,
    updates: Mapping[str, str] | None = None,
    remove: Iterable[str] = (),
) -> bool:
    """Save a server's settings together with changes to some credentials (flat names,
    "header:<name>" / "env:<NAME>"): blank updates keep the stored value, `remove` forgets
    names. Returns whether it wrote.

    This is what write-only admin fields need: the admin never sees the stored values, so it
    can only say which to replace or forget. A new destination (URL, or stdio command and
    arguments) is refused while a stored credential would follow it without being re-entered.
    """
    return credentials_service.save_with_changes(
        actor=actor,
        instance=server,
        updates=updates,
        remove=remove,
        check_move=lambda stored, entered, forgotten: check_destination_change(
            stored,
            destination=server.destination,
            entered=entered,
            forgotten=forgotten,
        ),
    )


def check_destination_change(
    stored: MCPServer,
    *,
    destination: tuple[str, ...],
    entered: Iterable[str] = (),
    forgotten: Iterable[str] = (),
) -> None:
    """Refuse to move `stored` (the server as it is in the database) to `destination` while a
    stored credential would be sent there unconfirmed: whoever may edit the URL (or the
    command) could otherwise point it at something of their own and collect the secrets."""
    if stored.destination != destination and credentials_service.would_follow_a_move(
        stored, entered, forgotten
    ):
        field = "command" if stored.transport == MCPServer.Transport.STDIO else "url"
        raise ValidationError({field: MOVED_CREDENTIALS})


def credential_label(name: str) -> str:
    """`header:Authorization` -> `header Authorization`, for messages and the admin."""
    for prefix, label in ((HEADER_PREFIX, "header"), (ENV_PREFIX, "env")):
        if name.startswith(prefix):
            return f"{label} {name.removeprefix(prefix)}"
    return name


# --- tool prices ------------------------------------------------------------------------------


def set_tool_prices(
    *, actor: Actor, server: MCPServer, prices: Sequence[ToolPriceSpec]
) -> list[str]:
    """Make the server's tool prices exactly `prices`, matched in that order. Returns what
    changed, one line per price ("+ search_*", "~ search_*", "- get_*")."""
    if server.pk is None:
        raise ValueError("save the server before its tool prices")
    changes: list[str] = []
    with transaction.atomic():
        stored = {price.tool_pattern: price for price in server.tool_prices.order_by("id")}
        for position, spec in enumerate(prices):
            existing = stored.pop(spec.tool_pattern, None)
            price = existing or MCPToolPrice(server=server, tool_pattern=spec.tool_pattern)
            price.per_call_micros = spec.per_call_micros
            price.per_kb_micros = spec.per_kb_micros
            price.position = position
            if common.save_instance(price, actor=actor):
                changes.append(f"{'~' if existing else '+'} {spec.tool_pattern}")
        for leftover in stored.values():
            common.delete_instance(leftover, actor=actor, note="not in the tool price list")
            changes.append(f"- {leftover.tool_pattern}")
    return changes


# --- grants -----------------------------------------------------------------------------------


def save_grant(*, actor: Actor, grant: MCPToolGrant) -> bool:
    """Create or update a grant (validated: exactly one owner). Returns whether it wrote."""
    return common.save_instance(grant, actor=actor)


def revoke_grant(*, actor: Actor, grant: MCPToolGrant, reason: str = "") -> None:
    """Delete a grant; gateways stop offering its tools within the policy refresh interval."""
    common.delete_instance(grant, actor=actor, note=reason)
