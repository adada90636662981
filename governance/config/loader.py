"""Read a config file: YAML with the line of every value, and `${NAME}` from the environment.

Interpolation happens in string values only (never in keys):

- `${NAME}`           the variable's value; an error naming it and its line if it is not set.
- `${NAME:-default}`  the default (may be empty) when the variable is unset or empty.
- `$${`               a literal `${`.

A substituted value stays a string; the schema converts it where a number or a boolean is
expected (`amount_usd: ${TEAM_BUDGET}`, `enabled: ${USE_BEDROCK:-false}`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path as FilePath
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from governance.config.errors import ConfigError, Issue, LineMap, Path

STR_TAG = "tag:yaml.org,2002:str"
REFERENCE = re.compile(r"(?P<escape>\$\$\{)|\$\{(?P<body>[^{}]*)\}|(?P<open>\$\{)")
BODY = re.compile(r"(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>.*))?", re.DOTALL)


@dataclass(frozen=True, slots=True)
class Document:
    data: Any
    lines: LineMap


def load_file(path: FilePath, *, env: Mapping[str, str], source: str = "") -> Document:
    return load_text(path.read_text(encoding="utf-8"), env=env, source=source or str(path))


def load_text(text: str, *, env: Mapping[str, str], source: str = "<config>") -> Document:
    loader = yaml.SafeLoader(text)
    builder = _Builder(loader, env, source)
    try:
        root = loader.get_single_node()
        data = builder.build(root, ()) if root is not None else {}
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        raise ConfigError(source, [(line, Issue((), f"not valid YAML: {exc.problem}"))]) from None
    finally:
        loader.dispose()
    return Document(data=data, lines=LineMap(source, builder.lines))


class _Builder:
    """Turns YAML nodes into plain values, noting each value's line as it goes."""

    def __init__(self, loader: yaml.SafeLoader, env: Mapping[str, str], source: str) -> None:
        self.loader = loader
        self.env = env
        self.source = source
        self.lines: dict[Path, int] = {}

    def build(self, node: Node, path: Path) -> Any:
        self.lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, MappingNode):
            return self._mapping(node, path)
        if isinstance(node, SequenceNode):
            return [self.build(item, (*path, index)) for index, item in enumerate(node.value)]
        if isinstance(node, ScalarNode) and node.tag == STR_TAG:
            return self._interpolate(str(node.value), path, node.start_mark.line + 1)
        return self.loader.construct_object(node, deep=True)

    def _mapping(self, node: MappingNode, path: Path) -> dict[str, Any]:
        self.loader.flatten_mapping(node)  # resolves `<<: *anchor` merge keys
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            key = self.loader.construct_object(key_node, deep=True)
            if not isinstance(key, str):
                raise self._fail(path, line, f"field names must be text, not {key!r}")
            if key in result:
                raise self._fail((*path, key), line, "this field appears twice")
            # The key's line, not the value's: for a nested block that is where the name is.
            self.lines[(*path, key)] = line
            result[key] = self.build(value_node, (*path, key))
        return result

    def _interpolate(self, text: str, path: Path, line: int) -> str:
        def replace(match: re.Match[str]) -> str:
            if match.group("escape"):
                return "${"
            body = match.group("body")
            parsed = BODY.fullmatch(body) if body is not None else None
            if parsed is None:
                raise self._fail(
                    path, line, "a variable reference must look like ${NAME} or ${NAME:-default}"
                )
            name, default = parsed.group("name"), parsed.group("default")
            value = self.env.get(name)
            if default is not None:
                return value or default
            if value is None:
                raise self._fail(
                    path,
                    line,
                    f"environment variable {name} is not set "
                    f"(write ${{{name}:-}} to make it optional)",
                )
            return value

        return REFERENCE.sub(replace, text) if "$" in text else text

    def _fail(self, path: Path, line: int, message: str) -> ConfigError:
        return ConfigError(self.source, [(line, Issue(path, message))])
