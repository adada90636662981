"""What every reconciling step shares: who acts, where errors point, and the change list."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

from django.core.exceptions import NON_FIELD_ERRORS
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import models

from governance.actors import Actor
from governance.config.changes import ChangeLog, describe_diff
from governance.config.errors import ConfigError, Issue, LineMap, Path
from governance.models import Organization, Project, Team, VirtualKey
from governance.services import common

M = TypeVar("M", bound=models.Model)

# Model field -> the field of the config file a validation error should point at.
FILE_FIELDS = {
    "amount_micros": "amount_usd",
    "model_patterns": "models",
    "provider_names": "providers",
    "alert_thresholds": "alerts",
    "downgrade_model": "on_exhaust",
    "allowed_patterns": "allow",
    "denied_patterns": "deny",
    "overrides": "overrides",
    "tool_patterns": "tools",
    "price_per_call_micros": "per_call_usd",
    "price_per_kb_micros": "per_kb_usd",
    "per_call_micros": "per_call_usd",
    "per_kb_micros": "per_kb_usd",
    "tool_pattern": "tool",
    "upstream_model": "model",
    "public_name": "name",
}


@dataclass
class Context:
    actor: Actor
    lines: LineMap
    dry_run: bool
    log: ChangeLog = field(default_factory=ChangeLog)
    new_secrets: list[tuple[str, str]] = field(default_factory=list)
    # Owners whose MCP grants the file describes completely.
    declared_organizations: list[Organization] = field(default_factory=list)
    declared_teams: list[Team] = field(default_factory=list)
    declared_projects: list[Project] = field(default_factory=list)
    declared_keys: list[VirtualKey] = field(default_factory=list)
    # Names budgets and model rules may refer to, filled once providers and routes are applied.
    known_providers: set[str] = field(default_factory=set)
    known_models: set[str] = field(default_factory=set)

    def fail(self, path: Path, message: str) -> ConfigError:
        return self.lines.fail(path, message)

    @contextmanager
    def pointing_at(self, path: Path) -> Iterator[None]:
        """Report a model validation error raised inside as an error at `path` in the file."""
        try:
            yield
        except DjangoValidationError as exc:
            raise self.lines.error(_issues(exc, path)) from None

    def upsert(
        self,
        *,
        existing: M | None,
        new: Callable[[], M],
        values: dict[str, Any],
        kind: str,
        label: str,
        path: Path,
        detail: str = "",
    ) -> M:
        """Create the object, or bring the stored one to `values`; log what changed."""
        if existing is None:
            obj = new()
            for name, value in values.items():
                setattr(obj, name, value)
            with self.pointing_at(path):
                common.save_instance(obj, actor=self.actor)
            self.log.created(kind, label, detail)
            return obj
        diffs = [
            (name, getattr(existing, name), value)
            for name, value in values.items()
            if getattr(existing, name) != value
        ]
        for name, value in values.items():
            setattr(existing, name, value)
        with self.pointing_at(path):
            wrote = common.save_instance(existing, actor=self.actor)
        if wrote:
            self.log.updated(kind, label, describe_diff(diffs) or "stored row normalized")
        return existing

    def delete(self, obj: models.Model, *, kind: str, label: str) -> None:
        common.delete_instance(obj, actor=self.actor, note="not in the config file")
        self.log.deleted(kind, label)


def _issues(exc: DjangoValidationError, path: Path) -> list[Issue]:
    if not hasattr(exc, "error_dict"):
        return [Issue(path, message) for message in exc.messages]
    issues: list[Issue] = []
    for name, messages in exc.message_dict.items():
        where = path if name == NON_FIELD_ERRORS else (*path, FILE_FIELDS.get(name, name))
        issues.extend(Issue(where, message) for message in messages)
    return issues
