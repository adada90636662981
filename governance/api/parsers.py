"""Request bodies: JSON only, and no text a database column cannot hold."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser


def _unstorable(value: Any) -> str | None:
    """Why `value` (parsed JSON) cannot be stored, or None: PostgreSQL refuses NUL characters
    in text and JSON, and no database encodes lone UTF-16 surrogates (`"\\ud800"`)."""
    if isinstance(value, str):
        if "\x00" in value:
            return "NUL characters (\\u0000) are not accepted"
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return "lone surrogates (\\ud800-\\udfff) are not accepted"
        return None
    if isinstance(value, Mapping):
        value = [*value.keys(), *value.values()]
    if isinstance(value, list):
        for item in value:
            problem = _unstorable(item)
            if problem is not None:
                return problem
    return None


class StrictJSONParser(JSONParser):
    def parse(
        self,
        stream: Any,
        media_type: str | None = None,
        parser_context: Mapping[str, Any] | None = None,
    ) -> Any:
        data = super().parse(stream, media_type, parser_context)
        problem = _unstorable(data)
        if problem is not None:
            raise ParseError(f"JSON parse error - {problem}")
        return data
