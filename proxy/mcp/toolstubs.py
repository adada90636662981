"""Tool stubs for Code Mode: MCP tool definitions seen as Python functions.

A stub is what a program calls: a Python identifier for the MCP tool name, a typed signature
derived from the tool's JSON Schema, its documentation, and argument validation against that
schema (jsonschema, the reference implementation). Pure functions: no I/O, no sandbox.
"""

from __future__ import annotations

import builtins
import functools
import keyword
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from jsonschema import Draft202012Validator, validators
from jsonschema.exceptions import SchemaError, best_match
from jsonschema.protocols import Validator

# A tool named like a builtin (`list`, `print`) would be shadowed by it inside the program.
_RESERVED = frozenset(dir(builtins)) | frozenset(keyword.kwlist) | frozenset(keyword.softkwlist)
_NOT_IDENTIFIER = re.compile(r"[^0-9A-Za-z_]")
_SUMMARY_CHARS = 120
# Deeper schemas are shown as Any: a signature is a reading aid, validation sees the whole schema.
_MAX_TYPE_DEPTH = 4
_MAX_LITERALS = 12
_SIMPLE_TYPES = {
    "string": "str",
    "integer": "int",
    "number": "float",
    "boolean": "bool",
    "null": "None",
}
RESULT_DOC = (
    "its structured content if any, else its text (a JSON object or array is parsed; "
    "several texts give a list), else its content blocks. A failed call raises RuntimeError."
)


@dataclass(frozen=True, slots=True)
class ToolStub:
    """One MCP tool as a program sees it."""

    name: str  # the tool name call_tool receives (the data plane's namespaced name)
    function: str  # the Python identifier a program calls
    description: str
    input_schema: Mapping[str, Any]
    output_schema: Mapping[str, Any] | None = None
    title: str = ""

    @property
    def summary(self) -> str:
        """The first sentence of the description, on one line."""
        text = " ".join((self.description or self.title).split())
        sentence = re.split(r"(?<=[.!?])\s", text, maxsplit=1)[0]
        if len(sentence) > _SUMMARY_CHARS:
            sentence = sentence[: _SUMMARY_CHARS - 1].rstrip() + "…"
        return sentence

    def signature(self) -> str:
        returns = type_of(self.output_schema, self.output_schema) if self.output_schema else "Any"
        return f"def {self.function}({_parameters(self.input_schema)}) -> {returns}"

    def docs(self) -> str:
        """The signature and a docstring: description, arguments, result."""
        about = self.description.strip().splitlines() or [self.title or self.name]
        if self.title and self.description.strip():
            about = [self.title, "", *about]
        lines = [
            self.signature() + ":",
            '    """' + about[0],
            *("    " + line for line in about[1:]),
        ]
        arguments = _argument_docs(self.input_schema)
        if arguments:
            lines += ["", "    Arguments:", *arguments]
        if not _keyword_callable(self.input_schema):
            lines += ["", f"    Call it with one dict: {self.function}({{'name': value}})."]
        lines += ["", "    Returns: " + RESULT_DOC, '    """']
        return "\n".join(lines)

    def validation_error(self, arguments: Mapping[str, Any]) -> str:
        """Why the arguments do not match the tool's input schema ("" when they do)."""
        validator = _validator(_canonical(self.input_schema))
        if validator is None:
            return ""
        error = best_match(validator.iter_errors(dict(arguments)))
        if error is None:
            return ""
        where = "".join(f"[{part!r}]" for part in error.absolute_path)
        place = f" (at arguments{where})" if where else ""
        return f"{self.function}(): {error.message}{place}"


def build_stubs(definitions: Iterable[Mapping[str, Any]]) -> dict[str, ToolStub]:
    """Stubs keyed by MCP tool name, from `tools/list` entries (name, description, inputSchema).

    Python identifiers are unique: a clash after sanitizing gets a numeric suffix.
    """
    stubs: dict[str, ToolStub] = {}
    taken: set[str] = set()
    for definition in definitions:
        name = str(definition.get("name", ""))
        if not name or name in stubs:
            continue
        function = _unique(python_identifier(name), taken)
        taken.add(function)
        schema = definition.get("inputSchema")
        output = definition.get("outputSchema")
        stubs[name] = ToolStub(
            name=name,
            function=function,
            description=str(definition.get("description") or ""),
            input_schema=schema if isinstance(schema, Mapping) else {"type": "object"},
            output_schema=output if isinstance(output, Mapping) else None,
            title=str(definition.get("title") or ""),
        )
    return stubs


def python_identifier(name: str) -> str:
    identifier = _NOT_IDENTIFIER.sub("_", name) or "_"
    if identifier[0].isdigit():
        identifier = "_" + identifier
    if identifier in _RESERVED:
        identifier += "_tool"
    return identifier


def find(stubs: Iterable[ToolStub], query: str) -> list[ToolStub]:
    """Stubs matching any word of the query, best first (a word in the name counts most)."""
    words = [word for word in re.split(r"[^0-9a-z]+", query.lower()) if word]
    ordered = sorted(stubs, key=lambda stub: stub.name)
    if not words:
        return ordered
    scored: list[tuple[int, ToolStub]] = []
    for stub in ordered:
        name = stub.name.lower()
        text = f"{stub.title} {stub.description}".lower()
        score = sum(3 * (word in name) + (word in text) for word in words)
        if score:
            scored.append((score, stub))
    scored.sort(key=lambda pair: -pair[0])  # stable: equal scores stay in name order
    return [stub for _, stub in scored]


def type_of(schema: Any, root: Any, depth: int = 0) -> str:
    """A Python type annotation for a JSON Schema (best effort, for reading)."""
    if depth > _MAX_TYPE_DEPTH or not isinstance(schema, Mapping):
        return "Any"
    composed = _composed_type(schema, root, depth)
    if composed:
        return composed
    kind = schema.get("type")
    if isinstance(kind, list):
        return _union(type_of({**schema, "type": each}, root, depth) for each in kind)
    return _type_of_kind(kind, schema, root, depth)


def _composed_type(schema: Mapping[str, Any], root: Any, depth: int) -> str:
    """The type from $ref, const, enum, anyOf/oneOf or a lone allOf ("" without them)."""
    if "$ref" in schema:
        return type_of(_resolve(schema["$ref"], root), root, depth + 1)
    if "const" in schema:
        return f"Literal[{schema['const']!r}]"
    enum = schema.get("enum")
    if isinstance(enum, list) and 0 < len(enum) <= _MAX_LITERALS:
        return "Literal[" + ", ".join(repr(value) for value in enum) + "]"
    for combinator in ("anyOf", "oneOf"):
        options = schema.get(combinator)
        if isinstance(options, list) and options:
            return _union(type_of(option, root, depth + 1) for option in options)
    all_of = schema.get("allOf")
    if isinstance(all_of, list) and len(all_of) == 1:
        return type_of(all_of[0], root, depth + 1)
    return ""


def _type_of_kind(kind: Any, schema: Mapping[str, Any], root: Any, depth: int) -> str:
    if kind in _SIMPLE_TYPES:
        return _SIMPLE_TYPES[kind]
    if kind == "array":
        return f"list[{type_of(schema.get('items'), root, depth + 1)}]"
    if kind == "object" or "properties" in schema:
        extra = schema.get("additionalProperties")
        if isinstance(extra, Mapping) and not schema.get("properties"):
            return f"dict[str, {type_of(extra, root, depth + 1)}]"
        return "dict[str, Any]"
    return "Any"


def _union(types: Iterable[str]) -> str:
    unique = list(dict.fromkeys(types))
    if "Any" in unique:
        return "Any"
    return " | ".join(unique)


def _resolve(reference: Any, root: Any) -> Any:
    """A local reference (#/$defs/X, #/definitions/X); anything else is unknown."""
    if not isinstance(reference, str) or not reference.startswith("#/"):
        return None
    node = root
    for part in reference[2:].split("/"):
        if not isinstance(node, Mapping):
            return None
        node = node.get(part.replace("~1", "/").replace("~0", "~"))
    return node


def _properties(schema: Mapping[str, Any]) -> tuple[dict[str, Any], set[str]]:
    properties = schema.get("properties")
    required = schema.get("required")
    return (
        dict(properties) if isinstance(properties, Mapping) else {},
        set(required) if isinstance(required, list) else set(),
    )


def _keyword_callable(schema: Mapping[str, Any]) -> bool:
    """Whether every argument name can be passed as a Python keyword argument."""
    properties, _ = _properties(schema)
    return all(name.isidentifier() and not keyword.iskeyword(name) for name in properties)


def _parameters(schema: Mapping[str, Any]) -> str:
    properties, required = _properties(schema)
    if not properties:
        return ""
    if not _keyword_callable(schema):
        return "arguments: dict[str, Any], /"
    ordered = sorted(properties, key=lambda name: name not in required)  # required first
    parts = []
    for name in ordered:
        prop = properties[name]
        annotation = type_of(prop, schema)
        if name in required:
            parts.append(f"{name}: {annotation}")
        elif isinstance(prop, Mapping) and "default" in prop:
            parts.append(f"{name}: {annotation} = {prop['default']!r}")
        else:
            nullable = annotation == "Any" or "None" in annotation.split(" | ")
            optional = annotation if nullable else f"{annotation} | None"
            parts.append(f"{name}: {optional} = None")
    return "*, " + ", ".join(parts)


def _argument_docs(schema: Mapping[str, Any]) -> list[str]:
    properties, required = _properties(schema)
    lines = []
    for name in sorted(properties, key=lambda name: name not in required):
        prop = properties[name] if isinstance(properties[name], Mapping) else {}
        flag = ", required" if name in required else ""
        about = " ".join(str(prop.get("description", "")).split())
        lines.append(f"        {name} ({type_of(prop, schema)}{flag}): {about}".rstrip(": "))
        nested, nested_required = _properties(prop)
        for key, raw in nested.items():
            value = raw if isinstance(raw, Mapping) else {}
            flag = ", required" if key in nested_required else ""
            text = " ".join(str(value.get("description", "")).split())
            lines.append(f"            {key} ({type_of(value, schema)}{flag}): {text}".rstrip(": "))
    return lines


def _unique(identifier: str, taken: set[str]) -> str:
    candidate, number = identifier, 2
    while candidate in taken:
        candidate, number = f"{identifier}_{number}", number + 1
    return candidate


def _canonical(schema: Mapping[str, Any]) -> bytes:
    return orjson.dumps(dict(schema), default=_plain, option=orjson.OPT_SORT_KEYS)


def _plain(value: Any) -> Any:
    """JSON data for what orjson does not take as is (a read-only mapping, a tuple subclass)."""
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, Iterable) and not isinstance(value, str | bytes):
        return list(value)
    raise TypeError(f"not JSON data: {type(value).__name__}")


@functools.lru_cache(maxsize=1024)
def _validator(schema_json: bytes) -> Validator | None:
    """A validator per distinct schema; None for a schema that is itself invalid.

    An upstream that publishes a broken schema still validates the call itself.
    """
    schema = orjson.loads(schema_json)
    if not isinstance(schema, dict):
        return None
    cls = validators.validator_for(schema, default=Draft202012Validator)
    try:
        cls.check_schema(schema)
    except SchemaError:
        return None
    return cls(schema)


__all__ = ["RESULT_DOC", "ToolStub", "build_stubs", "find", "python_identifier", "type_of"]
