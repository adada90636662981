"""Errors that name the file, the line and the field, so a typo is found in seconds."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

# A location in the document: mapping keys and list indexes, e.g. ("organizations", 0, "teams").
Path = tuple[str | int, ...]


def format_path(path: Path) -> str:
    """`organizations[0].teams[1].budgets[0].period`, the way the file is read."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text or "(top level)"


@dataclass(frozen=True, slots=True)
class Issue:
    path: Path
    message: str


class ConfigError(Exception):
    """One or more problems in a config file; nothing was changed."""

    def __init__(self, source: str, issues: Iterable[tuple[int, Issue]]) -> None:
        self.source = source
        self.located = list(issues)
        super().__init__(str(self))

    @property
    def issues(self) -> list[Issue]:
        return [issue for _, issue in self.located]

    def __str__(self) -> str:
        return "\n".join(
            f"{self.source} line {line}: "
            + (f"{format_path(issue.path)}: " if issue.path else "")
            + issue.message
            for line, issue in self.located
        )


class LineMap:
    """Where each value of the document starts, so errors can point at a line."""

    def __init__(self, source: str, lines: Mapping[Path, int]) -> None:
        self.source = source
        self._lines = dict(lines)

    def line_of(self, path: Path) -> int:
        # A missing field has no line of its own: point at the closest enclosing value.
        for end in range(len(path), -1, -1):
            line = self._lines.get(path[:end])
            if line is not None:
                return line
        return 1

    def error(self, issues: Iterable[Issue]) -> ConfigError:
        return ConfigError(self.source, [(self.line_of(i.path), i) for i in issues])

    def fail(self, path: Path, message: str) -> ConfigError:
        return self.error([Issue(path, message)])
