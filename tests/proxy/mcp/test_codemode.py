"""Code Mode as a library: meta-tools built from tool definitions, and programs run in the
Monty sandbox, calling tools through a `call_tool` the test supplies (as the data plane does).
No database, no HTTP: every program runs in a real sandbox worker."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable
from types import MappingProxyType
from typing import Any

import pytest

from proxy.mcp import codemode, sandbox
from proxy.mcp.codemode import CodeMode, Limits, ProgramResult, ToolRefused, run_program
from proxy.mcp.toolstubs import build_stubs

LIMITS = Limits(
    wall_seconds=10.0,
    cpu_seconds=0.5,
    memory_bytes=16 * 1024 * 1024,
    max_tool_calls=5,
    max_result_bytes=4096,
    max_output_bytes=256,
)

DEFINITIONS: list[dict[str, Any]] = [
    {
        "name": "github__get_issue",
        "description": "Get one issue of a repository. Returns its title, state and labels.",
        "inputSchema": {
            "type": "object",
            "properties": {
                "repo": {"type": "string", "description": "owner/name"},
                "number": {"type": "integer", "minimum": 1},
                "state": {"type": "string", "enum": ["open", "closed"]},
                "labels": {"type": "array", "items": {"type": "string"}},
                "per_page": {"type": "integer", "default": 30},
            },
            "required": ["repo", "number"],
        },
    },
    {
        "name": "jira__search",
        "description": "Search Jira issues with JQL.",
        "inputSchema": {
            "type": "object",
            "properties": {"jql": {"type": "string"}},
            "required": ["jql"],
        },
        "outputSchema": {
            "type": "object",
            "properties": {"keys": {"type": "array", "items": {"type": "string"}}},
        },
    },
    {
        "name": "db__run-query",
        "description": "Run a read-only SQL query.",
        "inputSchema": {"type": "object", "properties": {"sql": {"type": "string"}}},
    },
]
TOOLS = build_stubs(DEFINITIONS)


class Upstream:
    """A call_tool that records every call and answers from a table of results."""

    def __init__(self, results: dict[str, Any] | None = None) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.results = results or {}

    async def __call__(self, name: str, arguments: dict[str, Any]) -> Any:
        self.calls.append((name, arguments))
        answer = self.results.get(name)
        if isinstance(answer, BaseException):
            raise answer
        if answer is not None:
            return answer
        return {"content": [{"type": "text", "text": f"{name} done"}]}


def text(value: str) -> dict[str, Any]:
    return {"content": [{"type": "text", "text": value}]}


async def run(source: str, upstream: Upstream, limits: Limits = LIMITS) -> ProgramResult:
    return await run_program(source, tools=TOOLS, call_tool=upstream, limits=limits)


async def while_serving(
    work: Awaitable[ProgramResult], *, pause: float = 0.01
) -> tuple[ProgramResult, list[str]]:
    """Run `work` next to a coroutine that needs the event loop; return the order of events.

    "served" before "program ended" shows that the loop kept running other tasks meanwhile.
    """
    events: list[str] = []

    async def other_request() -> None:
        for _ in range(3):
            await asyncio.sleep(pause)
        events.append("served")

    other = asyncio.create_task(other_request())
    result = await work
    events.append("program ended")
    await other
    return result, events


# --- programs calling tools -----------------------------------------------------------------


async def test_program_calling_two_tools_returns_the_combined_result() -> None:
    upstream = Upstream(
        {
            "github__get_issue": text('{"title": "Crash on start", "state": "open"}'),
            "jira__search": {
                "content": [{"type": "text", "text": "2 issues"}],
                "structuredContent": {"keys": ["OPS-1", "OPS-2"]},
            },
        }
    )
    source = (
        "issue = github__get_issue(repo='acme/app', number=7)\n"
        "found = jira__search(jql='text ~ \"' + issue['title'] + '\"')\n"
        "{'title': issue['title'], 'tickets': found['keys']}"
    )

    result = await run(source, upstream)

    assert result.ok, result.error
    assert result.value == {"title": "Crash on start", "tickets": ["OPS-1", "OPS-2"]}
    assert upstream.calls == [
        ("github__get_issue", {"repo": "acme/app", "number": 7}),
        ("jira__search", {"jql": 'text ~ "Crash on start"'}),
    ]
    assert result.tool_calls == 2


async def test_only_the_programs_result_returns_to_the_model() -> None:
    upstream = Upstream({"db__run-query": text("secret row data " * 20)})

    result = await run("rows = db__run_query(sql='select 1')\nlen(rows)", upstream)

    answer = result.to_call_tool_result()
    assert answer == {"content": [{"type": "text", "text": "320"}], "isError": False}


async def test_mcp_content_lists_are_usable_from_the_program() -> None:
    upstream = Upstream(
        {
            "github__get_issue": text('[{"n": 1}, {"n": 2}]'),  # JSON text is parsed
            "jira__search": {
                "content": [{"type": "text", "text": "{}"}],
                "structuredContent": {"keys": ["A-1"]},  # structured content wins
            },
            "db__run-query": {
                "content": [
                    {"type": "text", "text": "chart of"},
                    {"type": "image", "data": "aGk=", "mimeType": "image/png"},
                ]
            },
        }
    )
    source = (
        "issues = github__get_issue(repo='a/b', number=1)\n"
        "keys = jira__search(jql='x')['keys']\n"
        "blocks = db__run_query(sql='x')\n"
        "[sum(i['n'] for i in issues), keys, blocks[0]['text'], blocks[1]['mimeType']]"
    )

    result = await run(source, upstream)

    assert result.value == [3, ["A-1"], "chart of", "image/png"]


async def test_plain_text_and_several_text_blocks_stay_text() -> None:
    upstream = Upstream(
        {
            "github__get_issue": text("42"),  # not an object or array: stays a string
            "db__run-query": {
                "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]
            },
        }
    )

    result = await run(
        "[github__get_issue(repo='a/b', number=1), db__run_query(sql='x')]", upstream
    )

    assert result.value == ["42", ["a", "b"]]


async def test_a_tool_error_result_is_an_exception_the_program_can_handle() -> None:
    failing = {"content": [{"type": "text", "text": "repository not found"}], "isError": True}
    upstream = Upstream({"github__get_issue": failing})
    source = (
        "try:\n"
        "    github__get_issue(repo='a/b', number=1)\n"
        "    outcome = 'no error'\n"
        "except RuntimeError as error:\n"
        "    outcome = str(error)\n"
        "outcome"
    )

    result = await run(source, upstream)

    assert result.value == "github__get_issue(): repository not found"


async def test_sdk_result_models_are_accepted_like_json() -> None:
    class SdkResult:  # what the mcp SDK's CallToolResult offers
        def model_dump(self, **options: Any) -> dict[str, Any]:
            assert options["by_alias"] is True
            return {"content": [], "structuredContent": {"ok": True}}

    upstream = Upstream({"jira__search": SdkResult()})

    result = await run("jira__search(jql='x')", upstream)

    assert result.value == {"ok": True}


async def test_a_tool_held_in_a_variable_is_still_the_tool() -> None:
    upstream = Upstream()

    result = await run("search = jira__search\nsearch(jql='x')", upstream)

    assert result.value == "jira__search done"
    assert upstream.calls == [("jira__search", {"jql": "x"})]


async def test_one_positional_dict_is_taken_as_the_arguments() -> None:
    upstream = Upstream()

    result = await run("db__run_query({'sql': 'select 1'})", upstream)

    assert result.ok, result.error
    assert upstream.calls == [("db__run-query", {"sql": "select 1"})]


async def test_print_output_comes_back_and_is_cut_at_the_limit() -> None:
    result = await run("print('hello')\nfor i in range(100):\n    print('x' * 10)", Upstream())

    assert result.ok
    assert result.output.startswith("hello\nxxxxxxxxxx\n")
    assert result.output.endswith("[print output cut at the limit]")
    assert len(result.output.encode()) < LIMITS.max_output_bytes + 64
    assert result.to_call_tool_result()["content"] == [{"type": "text", "text": result.output}]


async def test_a_result_over_the_size_limit_is_refused() -> None:
    result = await run("'x' * 10000", Upstream())

    assert not result.ok
    assert result.error_kind == "result_too_large"
    assert "return a smaller summary" in result.error


# --- argument validation --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "complaint"),
    [
        ("github__get_issue(repo='a/b')", "'number' is a required property"),
        ("github__get_issue(repo='a/b', number='seven')", "'seven' is not of type 'integer'"),
        ("github__get_issue(repo='a/b', number=1, state='merged')", "'merged' is not one of"),
        ("github__get_issue(repo='a/b', number=1, labels=['x', 2])", "(at arguments['labels'][1])"),
        ("github__get_issue('a/b', 7)", "pass the arguments by name"),
    ],
)
async def test_arguments_are_checked_against_the_tools_schema(call: str, complaint: str) -> None:
    upstream = Upstream()

    result = await run(call, upstream)

    assert not result.ok
    assert "TypeError: github__get_issue(): " in result.error
    assert complaint in result.error
    assert upstream.calls == []


async def test_arguments_made_of_tuples_are_sent_as_json_lists() -> None:
    upstream = Upstream()

    result = await run("github__get_issue(repo='a/b', number=1, labels=('bug', 'p1'))", upstream)

    assert result.ok, result.error
    assert upstream.calls[0][1]["labels"] == ["bug", "p1"]


# --- what a program may not do --------------------------------------------------------------


@pytest.mark.parametrize(
    "source",
    [
        "import os\nos.listdir('/')",
        "from socket import create_connection\ncreate_connection(('127.0.0.1', 80))",
        "import urllib.request",
        "import time\ntime.time()",
        "__import__('os')",
        "exec('import os')",
        "eval('1 + 1')",
        "(1).__class__.__bases__",
    ],
)
async def test_imports_and_dynamic_code_are_refused_before_running(source: str) -> None:
    upstream = Upstream()

    result = await run(source, upstream)

    assert not result.ok
    assert result.error_kind == "forbidden"
    assert "not available" in result.error
    assert "line 1" in result.error


async def test_opening_a_file_stops_the_program() -> None:
    result = await run("data = open('/etc/passwd').read()\ndata", Upstream())

    assert not result.ok
    assert result.error_kind == "forbidden"
    assert "tried to use files or the operating system (open)" in result.error


async def test_awaiting_a_tool_gets_a_hint_instead_of_a_crash() -> None:
    result = await run("await jira__search(jql='x')", Upstream())

    assert result.error_kind == "forbidden"
    assert "call them without await" in result.error


async def test_a_syntax_error_is_reported_with_its_line() -> None:
    result = await run("x = 1\ndef (:\n", Upstream())

    assert result.error_kind == "syntax"
    assert "line 2" in result.error


@pytest.mark.parametrize(
    ("source", "refused"),
    [
        ("import time\ntime.time()", "time.time"),
        ("import datetime\ndatetime.datetime.now()", "datetime.now"),
        ("import os\nos.listdir('/')", "Path.iterdir"),
        ("import os\nos.getenv('HOME')", "os.getenv"),
    ],
)
async def test_past_the_import_check_the_host_is_still_out_of_reach(
    source: str, refused: str
) -> None:
    # The sandbox itself, without the import check: every host-facing call comes back to the
    # host as a SystemCall (which run_program refuses) and never reaches the machine.
    session = await sandbox.Session.open(LIMITS, deadline=asyncio.get_running_loop().time() + 5)
    try:
        step = await session.start(source)
    finally:
        session.close()

    assert step == sandbox.SystemCall(refused)


async def test_an_endless_loop_is_stopped_while_the_gateway_keeps_serving() -> None:
    result, events = await while_serving(run("n = 0\nwhile True:\n    n += 1", Upstream()))

    assert not result.ok
    assert result.error_kind == "time"
    assert "time limit" in result.error
    assert events == ["served", "program ended"]


async def test_unbounded_allocation_is_stopped_while_the_gateway_keeps_serving() -> None:
    source = "rows = []\nwhile True:\n    rows.append('x' * 1000)"

    # Hitting 16 MiB takes a few milliseconds: three bare turns of the loop show it free.
    result, events = await while_serving(run(source, Upstream()), pause=0)

    assert not result.ok
    assert result.error_kind == "memory"
    assert "memory limit" in result.error
    assert events == ["served", "program ended"]


async def test_one_huge_allocation_is_refused_at_once() -> None:
    result = await run("'x' * 10_000_000_000", Upstream())

    assert result.error_kind == "memory"


async def test_wall_time_covers_a_tool_call_that_never_answers() -> None:
    cancelled = asyncio.Event()

    async def hanging_tool(name: str, arguments: dict[str, Any]) -> Any:
        try:
            await asyncio.Event().wait()
        finally:
            cancelled.set()

    limits = Limits(wall_seconds=0.3, cpu_seconds=0.3)
    result, events = await while_serving(
        run_program("jira__search(jql='x')", tools=TOOLS, call_tool=hanging_tool, limits=limits)
    )

    assert result.error_kind == "time"
    assert "0.3 s limit" in result.error
    assert cancelled.is_set()  # the hung call itself was cancelled
    assert events == ["served", "program ended"]


async def test_wall_time_holds_even_when_the_interpreter_ignores_its_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Stand-in for an interpreter that never returns from a turn on its own.
    release = threading.Event()
    turn_ended = threading.Event()

    def stuck_turn() -> None:
        release.wait(10)
        turn_ended.set()

    async def start(self: sandbox.Session, source: str) -> sandbox.Step:
        return await self._turn(stuck_turn)

    given_back = threading.Event()
    give_back = sandbox._exit_quietly

    def recording_give_back(session: Any) -> Any:
        def exit_checkout(entered: Any) -> None:
            give_back(session)(entered)
            given_back.set()

        return exit_checkout

    monkeypatch.setattr(sandbox.Session, "start", start)
    monkeypatch.setattr(sandbox, "_exit_quietly", recording_give_back)
    limits = Limits(wall_seconds=0.3, cpu_seconds=0.3)

    result, events = await while_serving(run("1", Upstream(), limits))
    # Correct code can never give the worker back here, so a short wait only shows a bug.
    kept_during_the_turn = not await asyncio.to_thread(given_back.wait, 0.2)
    release.set()

    assert result.error_kind == "time"
    assert events == ["served", "program ended"]
    assert await asyncio.to_thread(turn_ended.wait, 5)
    # The worker goes back to the pool only once its turn is over, never under it.
    assert kept_during_the_turn
    assert await asyncio.to_thread(given_back.wait, 5)


async def test_cancelled_programs_give_their_sandboxes_back() -> None:
    calling = asyncio.Event()

    async def hanging_tool(name: str, arguments: dict[str, Any]) -> Any:
        calling.set()
        await asyncio.Event().wait()

    for _ in range(sandbox.MAX_WORKERS + 1):  # more than the pool holds, if none came back
        calling.clear()
        task = asyncio.create_task(
            run_program("jira__search(jql='x')", tools=TOOLS, call_tool=hanging_tool)
        )
        await calling.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    result = await run("'still serving'", Upstream(), Limits(wall_seconds=3, cpu_seconds=1))

    assert result.value == "still serving"


async def test_the_sandbox_serves_the_next_program_after_one_is_stopped() -> None:
    await run("while True:\n    pass", Upstream())

    result = await run("sum(range(10))", Upstream())

    assert result.value == 45


async def test_programs_running_at_once_all_complete() -> None:
    upstream = Upstream()
    programs = [run(f"jira__search(jql='{n}')\n{n} * 2", upstream) for n in range(8)]

    results = await asyncio.gather(*programs)

    assert [result.value for result in results] == [n * 2 for n in range(8)]
    assert len(upstream.calls) == 8


# --- grants and limits on the calls a program makes -----------------------------------------


async def test_a_refused_call_stops_the_program_with_the_refusal() -> None:
    upstream = Upstream({"jira__search": ToolRefused("Unknown tool: jira__search")})
    source = (
        "try:\n"
        "    jira__search(jql='x')\n"
        "except Exception:\n"
        "    pass\n"
        "github__get_issue(repo='a/b', number=1)"
    )

    result = await run(source, upstream)

    assert not result.ok
    assert result.error_kind == "tool_refused"
    assert result.error == "jira__search(): Unknown tool: jira__search"
    assert [name for name, _ in upstream.calls] == ["jira__search"]  # nothing ran after it


async def test_a_guessed_name_outside_the_tools_is_never_called() -> None:
    upstream = Upstream()

    result = await run("finance__pay_invoice(amount=1000)", upstream)

    assert not result.ok
    assert "name 'finance__pay_invoice' is not defined" in result.error
    assert "not one of the tools" in result.error
    assert upstream.calls == []


async def test_the_tool_call_limit_stops_the_program() -> None:
    upstream = Upstream()

    result = await run("for n in range(100):\n    jira__search(jql=str(n))", upstream)

    assert not result.ok
    assert result.error_kind == "tool_calls"
    assert "more than 5 tool calls" in result.error
    assert len(upstream.calls) == 5
    assert result.tool_calls == 5


async def test_a_failing_call_tool_stops_the_program_without_its_details() -> None:
    upstream = Upstream({"jira__search": KeyError("internal-detail")})

    result = await run("jira__search(jql='x')", upstream)

    assert result.error_kind == "tool_failed"
    assert "internal-detail" not in result.error


# --- the meta-tools -------------------------------------------------------------------------


def test_the_meta_tools_replace_the_tool_definitions() -> None:
    mode = CodeMode(DEFINITIONS)

    definitions = mode.definitions()

    assert [d["name"] for d in definitions] == ["search_tools", "get_tool", "run_program"]
    assert "3 tools of db, github, jira" in definitions[0]["description"]
    assert all(d["inputSchema"]["type"] == "object" for d in definitions)
    assert mode.handles("run_program")
    assert not mode.handles("jira__search")


def test_a_prefix_namespaces_the_meta_tools() -> None:
    mode = CodeMode(DEFINITIONS, prefix="code__")

    assert [d["name"] for d in mode.definitions()] == [
        "code__search_tools",
        "code__get_tool",
        "code__run_program",
    ]
    assert "Call them from code__run_program" in mode.definitions()[0]["description"]
    assert mode.handles("code__get_tool")
    assert not mode.handles("get_tool")


async def test_search_tools_lists_matching_stubs_with_one_line_summaries() -> None:
    mode = CodeMode(DEFINITIONS)

    answer = await mode.call("search_tools", {"query": "issue"}, call_tool=Upstream())

    assert answer["isError"] is False
    assert answer["content"][0]["text"].splitlines() == [
        "github__get_issue: Get one issue of a repository.",
        "jira__search: Search Jira issues with JQL.",
    ]


async def test_search_tools_with_an_empty_query_lists_every_tool() -> None:
    answer = await CodeMode(DEFINITIONS).call("search_tools", {"query": ""}, call_tool=Upstream())

    assert len(answer["content"][0]["text"].splitlines()) == 3


async def test_get_tool_shows_a_typed_signature_and_docs() -> None:
    mode = CodeMode(DEFINITIONS)

    answer = await mode.call("get_tool", {"name": "github__get_issue"}, call_tool=Upstream())
    docs = answer["content"][0]["text"]

    assert docs.splitlines()[0] == (
        "def github__get_issue(*, repo: str, number: int, "
        "state: Literal['open', 'closed'] | None = None, labels: list[str] | None = None, "
        "per_page: int = 30) -> Any:"
    )
    assert "repo (str, required): owner/name" in docs
    assert "Get one issue of a repository." in docs


async def test_get_tool_shows_the_output_type_and_the_python_name() -> None:
    mode = CodeMode(DEFINITIONS)

    jira = await mode.call("get_tool", {"name": "jira__search"}, call_tool=Upstream())
    db = await mode.call("get_tool", {"name": "db__run-query"}, call_tool=Upstream())

    assert jira["content"][0]["text"].startswith("def jira__search(*, jql: str) -> dict[str, Any]:")
    assert db["content"][0]["text"].startswith("def db__run_query(*, sql: str | None = None)")


async def test_get_tool_suggests_close_names_for_an_unknown_one() -> None:
    answer = await CodeMode(DEFINITIONS).call(
        "get_tool", {"name": "github_get_isue"}, call_tool=Upstream()
    )

    assert answer["isError"] is True
    assert "Did you mean github__get_issue?" in answer["content"][0]["text"]


async def test_run_program_through_the_meta_tool_returns_an_mcp_result() -> None:
    upstream = Upstream()
    mode = CodeMode(DEFINITIONS, limits=LIMITS)

    answer = await mode.call("run_program", {"source": "jira__search(jql='x')"}, call_tool=upstream)
    refused = await mode.call("run_program", {"source": "import os"}, call_tool=upstream)
    missing = await mode.call("run_program", {}, call_tool=upstream)

    assert answer == {"content": [{"type": "text", "text": "jira__search done"}], "isError": False}
    assert refused["isError"] is True
    assert refused["content"][0]["text"].startswith("run_program stopped (forbidden): line 1")
    assert missing["isError"] is True


def test_tool_names_become_unique_python_identifiers() -> None:
    stubs = build_stubs(
        [
            {"name": "a-b", "inputSchema": {"type": "object"}},
            {"name": "a.b", "inputSchema": {"type": "object"}},
            {"name": "list", "inputSchema": {"type": "object"}},
            {"name": "3d", "inputSchema": {"type": "object"}},
        ]
    )

    assert [stub.function for stub in stubs.values()] == ["a_b", "a_b_2", "list_tool", "_3d"]


def test_signatures_follow_nullable_types_and_references() -> None:
    stub = build_stubs(
        [
            {
                "name": "t",
                "inputSchema": {
                    "type": "object",
                    "$defs": {"Point": {"type": "object", "properties": {"x": {"type": "number"}}}},
                    "properties": {
                        "note": {"type": ["string", "null"]},
                        "at": {"$ref": "#/$defs/Point"},
                        "kind": {"anyOf": [{"const": "a"}, {"type": "integer"}]},
                        "tags": {"type": "object", "additionalProperties": {"type": "string"}},
                    },
                },
            }
        ]
    )["t"]

    assert stub.signature() == (
        "def t(*, note: str | None = None, at: dict[str, Any] | None = None, "
        "kind: Literal['a'] | int | None = None, tags: dict[str, str] | None = None) -> Any"
    )


def test_arguments_are_validated_against_read_only_schemas() -> None:
    schema = MappingProxyType(
        {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    )
    stub = build_stubs([{"name": "t", "inputSchema": schema}])["t"]

    assert stub.validation_error({"n": 1}) == ""
    assert stub.validation_error({}) == "t(): 'n' is a required property"


def test_a_broken_schema_leaves_validation_to_the_upstream() -> None:
    stub = build_stubs([{"name": "t", "inputSchema": {"type": "no-such-type"}}])["t"]

    assert stub.validation_error({"anything": 1}) == ""


def test_limits_reject_a_compute_limit_past_the_wall_time() -> None:
    with pytest.raises(ValueError, match="cpu_seconds"):
        Limits(wall_seconds=1, cpu_seconds=2)


def test_the_meta_tools_cost_a_fraction_of_the_tools_they_replace() -> None:
    many = [
        {**definition, "name": f"{definition['name']}_{n}"}
        for n in range(20)
        for definition in DEFINITIONS
    ]

    meta = codemode.meta_tool_definitions(build_stubs(many))

    assert len(str(meta)) * 5 < len(str(many))
