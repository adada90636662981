"""The list of changes an apply made (or, in a dry run, would make), as readable lines."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from governance.money import format_usd

CREATE, UPDATE, DELETE = "+", "~", "-"

# Model field -> the name the config file uses for it.
FILE_NAMES = {
    "amount_micros": "amount",
    "model_patterns": "models",
    "provider_names": "providers",
    "alert_thresholds": "alerts",
    "downgrade_model": "downgrade_to",
    "allowed_patterns": "allow",
    "denied_patterns": "deny",
    "tool_patterns": "tools",
    "price_per_call_micros": "per_call",
    "price_per_kb_micros": "per_kb",
    "per_call_micros": "per_call",
    "per_kb_micros": "per_kb",
    "upstream_model": "model",
    "virtual_key": "key",
}


@dataclass(frozen=True, slots=True)
class Change:
    op: str
    kind: str
    label: str
    detail: str = ""

    def __str__(self) -> str:
        verb = {CREATE: "create", UPDATE: "update", DELETE: "delete"}[self.op]
        detail = f": {self.detail}" if self.op == UPDATE and self.detail else ""
        suffix = f" ({self.detail})" if self.op != UPDATE and self.detail else ""
        return f"{self.op} {verb} {self.kind} {self.label}{detail}{suffix}"


@dataclass
class ChangeLog:
    changes: list[Change] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def created(self, kind: str, label: str, detail: str = "") -> None:
        self.changes.append(Change(CREATE, kind, label, detail))

    def updated(self, kind: str, label: str, detail: str) -> None:
        self.changes.append(Change(UPDATE, kind, label, detail))

    def deleted(self, kind: str, label: str) -> None:
        self.changes.append(Change(DELETE, kind, label))

    def warn(self, message: str) -> None:
        self.warnings.append(message)

    def lines(self) -> list[str]:
        return [str(change) for change in self.changes]

    def counts(self) -> Counter[str]:
        return Counter(change.op for change in self.changes)


def describe_diff(diffs: list[tuple[str, Any, Any]]) -> str:
    """`amount $3,000.00 -> $3,500.00, alerts [50, 80] -> [50, 80, 100]`."""
    return ", ".join(
        f"{FILE_NAMES.get(name, name)} {show(name, old)} -> {show(name, new)}"
        for name, old, new in diffs
    )


def show(name: str, value: Any) -> str:
    if name.endswith("_micros") and isinstance(value, int):
        text = format_usd(value)
    elif value is None or isinstance(value, bool):
        text = {None: "none", True: "true", False: "false"}[value]
    elif isinstance(value, str):
        text = value or '""'
    elif isinstance(value, list | tuple):
        text = "[" + ", ".join(show("", item) for item in value) + "]"
    elif isinstance(value, dict):
        text = "{" + ", ".join(f"{k}: {show('', v)}" for k, v in value.items()) + "}"
    elif isinstance(value, dt.datetime):
        text = value.isoformat()
    else:
        text = str(value)  # model instances show as their __str__
    return text
