"""Namespaced tool names and the gateway's own tools/list cursors."""

from __future__ import annotations

import re

import pytest
from mcp.shared.exceptions import MCPError
from mcp_types import Tool

from proxy.mcp.names import MAX_NAME_LENGTH, ToolIndex, exposed_name
from proxy.mcp.server import decode_cursor, encode_cursor

VALID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def tool(name: str) -> Tool:
    return Tool(name=name, input_schema={"type": "object"})


def test_plain_names_are_kept_as_server_and_tool():
    assert exposed_name("github", "create_issue") == "github__create_issue"


@pytest.mark.parametrize(
    ("server", "name"),
    [("fs", "read.file"), ("my server", "a/b"), ("s", "ü"), ("x", "t" * 200), ("db", "")],
)
def test_names_the_messages_api_refuses_are_cleaned_deterministically(server, name):
    exposed = exposed_name(server, name)
    assert VALID.match(exposed) and len(exposed) <= MAX_NAME_LENGTH
    assert exposed == exposed_name(server, name)


def test_names_that_clean_alike_stay_distinct_and_map_back():
    index = ToolIndex({"fs": [tool("read.file"), tool("read_file"), tool("read/file")]})
    assert len(index.by_name) == 3
    assert {entry.tool.name for entry in index.by_name.values()} == {
        "read.file",
        "read_file",
        "read/file",
    }
    assert index.by_name["fs__read_file"].tool.name == "read_file"


def test_a_name_does_not_depend_on_the_other_tools_granted():
    alone = ToolIndex({"fs": [tool("read.file")]})
    among = ToolIndex({"fs": [tool("read.file"), tool("write"), tool("zap")], "gh": [tool("x")]})
    assert set(alone.by_name) <= set(among.by_name)


def test_a_tool_listed_twice_is_indexed_once():
    assert len(ToolIndex({"fs": [tool("a"), tool("a")]}).by_name) == 1


def test_cursor_round_trips_and_a_forged_one_is_invalid_params():
    assert decode_cursor(encode_cursor(300)) == 300
    assert decode_cursor(None) == 0
    for forged in ("abc", encode_cursor(1)[:-2] + "!!", "Z3cxOi0x"):
        with pytest.raises(MCPError) as refused:
            decode_cursor(forged)
        assert refused.value.code == -32602
