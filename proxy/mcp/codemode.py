"""Code Mode: a few meta-tools stand in for many MCP tools, and the model writes a program.

Instead of every tool definition, the client receives three small tools:
`search_tools(query)` lists matching tools (name and one-line summary), `get_tool(name)` shows
one tool's typed Python signature and documentation (derived from its JSON Schema), and
`run_program(source)` runs a short Python program that calls tools as plain functions. Only
the program's result (its last expression, plus what it printed) goes back to the model; the
tool results it handled in between do not. `benchmarks/mcp_tokens.py` measures the saving.

This module knows nothing of HTTP or MCP sessions. The data plane supplies `call_tool(name,
arguments)`, so every call a program makes passes the same grants, rate limits, budgets and
metering as a direct call; raising `ToolRefused` from it stops the program with that message.

The sandbox: pydantic-monty, chosen by measurement over starlark-pyo3
---------------------------------------------------------------------
Both install from manylinux wheels on Python 3.11, 3.12 and 3.13, and both licences fit
(starlark-pyo3 2026.1.3: Apache-2.0; pydantic-monty 1.4.0 and its client and runtime: MIT).
Measured here (2 cores; medians of 200 runs; the ranges span the three Pythons):

=========================  ==================================  ==================================
                           starlark-pyo3 2026.1.3              pydantic-monty 1.4.0
=========================  ==================================  ==================================
import                     1.1-1.4 ms                          47-55 ms (once, at start-up)
start-up                   first run 4.5-6.1 ms (in process)   pool + first worker + first run
                                                               5.3-7.4 ms
small program (1,000-int   0.06 ms                             0.19-0.39 ms, check-out included
list comprehension)
program with 2 host calls  0.03 ms                             0.10-0.20 ms
time limit                 cooperative `check_cancelled`       `max_feed_duration_secs` in the
                           between bytecodes; one long         worker (`while True` stopped at
                           operation ignores it: 'a' * 10**9   1.000 s, the loop ticking every
                           ran 3.2-6.3 s holding the GIL (the  10-14 ms meanwhile); the pool
                           event loop stalled 3.2 s, even      kills a worker that overruns a
                           from a thread)                      turn (`request_timeout`)
memory limit               none: 'a' * 10**9 put 1 GB in the   `max_memory`: 'a' * 10**10 refused
                           gateway's own heap; unbounded       at once (MemoryError), a growing
                           growth ended in a Rust OOM panic    list stopped at 64 MiB in 0.2 s;
                           in the host process                 the heap is another process's
tool-call limit            none (the host counts)              `max_suspensions`, and the host
                                                               counts too
host async function        a sync callable run on the          each call to an undefined
(the tool call)            evaluating thread: an async tool    function suspends the program and
                           needs a thread and                  hands (name, args, kwargs) to the
                           run_coroutine_threadsafe            host, which awaits the tool on its
                                                               own loop and resumes the program
language                   Starlark: no while, no recursion,   a Python subset: while, try,
                           no top-level for/if, no f-strings   classes, f-strings: what models
                           (standard dialect)                  write best
imports, files, clock      none by design                      its own modules only (json, re,
                                                               os, time...); every host-facing
                                                               call (open, Path, os.getenv,
                                                               time.time, datetime.now) comes
                                                               to the host, which refuses it
=========================  ==================================  ==================================

Monty wins on what Code Mode needs most: the program's heap and CPU time are bounded in another
process, so neither the gateway's memory nor its event loop is ever at risk, while Starlark in
process bounds neither (running it safely would mean writing a subprocess protocol of our own).
Monty's costs (a 50 ms import, a few tenths of a millisecond per program, 6-10 MB per idle
worker) are small next to one tool call's network round trip. No imports are allowed at all:
import statements (and exec, eval, compile, __import__) are refused before the program runs,
and Monty's own modules would reach nothing even past that check (see sandbox.py).
"""

from __future__ import annotations

import ast
import asyncio
import difflib
import json
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from proxy.mcp import sandbox
from proxy.mcp.sandbox import Limits
from proxy.mcp.toolstubs import RESULT_DOC, ToolStub, build_stubs, find

logger = logging.getLogger("gateway.mcp")

ToolResult = Mapping[str, Any]  # an MCP CallToolResult as JSON: content, structuredContent, isError
CallTool = Callable[[str, dict[str, Any]], Awaitable[Any]]  # a ToolResult, or an SDK model of one

SEARCH_TOOLS = "search_tools"
GET_TOOL = "get_tool"
RUN_PROGRAM = "run_program"
DEFAULT_LIMITS = Limits()
SEARCH_RESULTS = 20
MAX_SOURCE_CHARS = 50_000
MAX_ERROR_CHARS = 2_000
_DYNAMIC_CODE = frozenset({"exec", "eval", "compile", "__import__", "breakpoint", "input"})


class ToolRefused(Exception):
    """Raised by call_tool when the gateway refuses or cannot make a call: the program stops
    and the model reads this message (so it must be fit for a client to see)."""


@dataclass(frozen=True, slots=True)
class ProgramResult:
    ok: bool
    value: Any = None  # the program's last expression, as JSON-compatible data
    output: str = ""  # what it printed (cut at Limits.max_output_bytes)
    error: str = ""  # why it stopped, for the model
    error_kind: str = ""  # syntax, forbidden, runtime, time, memory, tool_calls, tool_refused...
    tool_calls: int = 0

    def to_call_tool_result(self) -> dict[str, Any]:
        """The MCP CallToolResult that answers `run_program`."""
        if not self.ok:
            text = f"run_program stopped ({self.error_kind}): {self.error}"
            if self.output:
                text += f"\n\nprint output before it stopped:\n{self.output}"
            return {"content": [{"type": "text", "text": text}], "isError": True}
        blocks = []
        if self.value is not None or not self.output:
            blocks.append({"type": "text", "text": _result_text(self.value)})
        if self.output:
            blocks.append({"type": "text", "text": self.output})
        return {"content": blocks, "isError": False}


def _result_text(value: Any) -> str:
    if value is None:
        return "None (the program's result is its last line, when that line is an expression)"
    if isinstance(value, str):
        return value
    return orjson.dumps(value).decode()


def _failure(kind: str, message: str, *, output: str = "", tool_calls: int = 0) -> ProgramResult:
    if len(message) > MAX_ERROR_CHARS:  # the end of a traceback says the most
        message = "…" + message[-MAX_ERROR_CHARS:]
    return ProgramResult(
        ok=False, error=message, error_kind=kind, output=output, tool_calls=tool_calls
    )


async def run_program(
    source: str,
    *,
    tools: Mapping[str, ToolStub],
    call_tool: CallTool,
    limits: Limits = DEFAULT_LIMITS,
) -> ProgramResult:
    """Run a program that may call `tools` (stubs keyed by tool name) through `call_tool`.

    Never raises for anything the program does: every way it can stop is a ProgramResult.
    """
    problem = check_source(source)
    if problem is not None:
        return _failure(*problem)
    run = _Run(tools, call_tool, limits)
    try:
        async with asyncio.timeout(limits.wall_seconds) as timer:
            return await run.execute(source)
    except TimeoutError:
        if not timer.expired():
            raise
        return _failure(
            "time",
            f"the program ran past its {limits.wall_seconds:g} s limit (tool calls included)",
            output=run.output(),
            tool_calls=run.calls,
        )


def check_source(source: str) -> tuple[str, str] | None:
    """(kind, message) when the program may not run; checked before any sandbox starts."""
    if len(source) > MAX_SOURCE_CHARS:
        return "forbidden", f"the program is longer than {MAX_SOURCE_CHARS} characters"
    try:
        tree = compile(
            source,
            sandbox.PROGRAM_NAME,
            "exec",
            flags=ast.PyCF_ONLY_AST | ast.PyCF_ALLOW_TOP_LEVEL_AWAIT,
            dont_inherit=True,
        )
    except (SyntaxError, ValueError) as error:
        line = getattr(error, "lineno", None)
        where = f" (line {line})" if line else ""
        return "syntax", f"SyntaxError: {getattr(error, 'msg', error)}{where}"
    for node in ast.walk(tree):
        message = _forbidden(node)
        if message:
            return "forbidden", f"line {getattr(node, 'lineno', '?')}: {message}"
    return None


def _forbidden(node: ast.AST) -> str:
    if isinstance(node, ast.Import | ast.ImportFrom):
        return (
            "import is not available: a Code Mode program has no modules, files, network "
            "or clock; call the tools as functions"
        )
    if isinstance(node, ast.Await | ast.AsyncFor | ast.AsyncWith | ast.AsyncFunctionDef):
        return "tools are plain functions here: call them without await or async"
    if isinstance(node, ast.Name) and node.id in _DYNAMIC_CODE:
        return f"{node.id}() is not available in a Code Mode program"
    if isinstance(node, ast.Attribute) and node.attr.startswith("__"):
        return f"the attribute {node.attr} is not available in a Code Mode program"
    return ""


class _Stopped(Exception):
    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


class _ToolFailed(Exception):
    """The tool answered with isError: raised inside the program, which may handle it."""


class _Run:
    """One program: answers each step the sandbox hands back until the program ends."""

    def __init__(self, tools: Mapping[str, ToolStub], call_tool: CallTool, limits: Limits) -> None:
        self.functions = {stub.function: stub for stub in tools.values()}
        self.call_tool = call_tool
        self.limits = limits
        self.calls = 0
        self.session: sandbox.Session | None = None

    def output(self) -> str:
        return self.session.output.text() if self.session is not None else ""

    async def execute(self, source: str) -> ProgramResult:
        deadline = asyncio.get_running_loop().time() + self.limits.wall_seconds
        try:
            self.session = await sandbox.Session.open(self.limits, deadline=deadline)
            step = await self.session.start(source)
            while not isinstance(step, sandbox.Done):
                step = await self._answer(self.session, step)
            return self._finish(step.value)
        except (sandbox.SandboxError, _Stopped) as stop:
            return _failure(stop.kind, stop.message, output=self.output(), tool_calls=self.calls)
        finally:
            if self.session is not None:
                self.session.close()

    async def _answer(self, session: sandbox.Session, step: sandbox.Step) -> sandbox.Step:
        if isinstance(step, sandbox.Call):
            return await self._call(session, step)
        if isinstance(step, sandbox.NameLookup):
            stub = self.functions.get(step.name)
            return await session.provide(_stand_in(stub.function) if stub else None)
        if isinstance(step, sandbox.SystemCall):
            raise _Stopped("forbidden", _system_call_refusal(step.name))
        raise _Stopped("runtime", f"unexpected program step {step!r}")

    async def _call(self, session: sandbox.Session, step: sandbox.Call) -> sandbox.Step:
        stub = self.functions.get(step.function)
        if stub is None:
            return await session.raise_in_program(
                "NameError",
                f"name '{step.function}' is not defined (it is not one of the tools; "
                "search_tools finds them)",
            )
        if self.calls >= self.limits.max_tool_calls:
            raise _Stopped(
                "tool_calls", f"the program made more than {self.limits.max_tool_calls} tool calls"
            )
        self.calls += 1
        arguments, problem = _arguments(stub, step)
        if problem:
            return await session.raise_in_program("TypeError", problem)
        try:
            value = program_value(await self._call_tool(stub, arguments))
        except _ToolFailed as failed:
            return await session.raise_in_program("RuntimeError", f"{stub.function}(): {failed}")
        return await session.answer(value)

    async def _call_tool(self, stub: ToolStub, arguments: dict[str, Any]) -> Any:
        try:
            return await self.call_tool(stub.name, arguments)
        except ToolRefused as refusal:
            raise _Stopped("tool_refused", f"{stub.function}(): {refusal}") from None
        except Exception:
            logger.warning("a Code Mode tool call to %s failed", stub.name, exc_info=True)
            raise _Stopped("tool_failed", f"{stub.function}(): the tool call failed") from None

    def _finish(self, value: Any) -> ProgramResult:
        try:
            text = orjson.dumps(value, default=_json_default)
        except (orjson.JSONEncodeError, TypeError):  # integers past 64 bits, very deep nesting
            try:
                text = json.dumps(value, default=_json_default).encode()
            except (ValueError, TypeError, RecursionError):
                return self._stopped("runtime", "the program's result cannot be made into JSON")
        if len(text) > self.limits.max_result_bytes:
            return self._stopped(
                "result_too_large",
                f"the result is {len(text)} bytes as JSON, over the "
                f"{self.limits.max_result_bytes}-byte limit: return a smaller summary",
            )
        return ProgramResult(
            ok=True, value=json.loads(text), output=self.output(), tool_calls=self.calls
        )

    def _stopped(self, kind: str, message: str) -> ProgramResult:
        return _failure(kind, message, output=self.output(), tool_calls=self.calls)


def _arguments(stub: ToolStub, step: sandbox.Call) -> tuple[dict[str, Any], str]:
    """The call's arguments as JSON data, and why they do not fit the schema ("" if they do)."""
    if step.args and (len(step.args) > 1 or step.kwargs or not isinstance(step.args[0], dict)):
        return {}, f"{stub.function}(): pass the arguments by name, e.g. {stub.function}(x=1)"
    raw = dict(step.args[0]) if step.args else step.kwargs
    try:
        arguments = orjson.loads(orjson.dumps(raw, default=_json_default))
    except (orjson.JSONEncodeError, TypeError):
        return {}, f"{stub.function}(): the arguments cannot be sent as JSON"
    return arguments, stub.validation_error(arguments)


def program_value(result: Any) -> Any:
    """What a tool call returns inside a program (see toolstubs.RESULT_DOC)."""
    data = _as_dict(result)
    blocks = [block for block in data.get("content") or () if isinstance(block, Mapping)]
    texts = [str(block.get("text", "")) for block in blocks if block.get("type") == "text"]
    if data.get("isError"):
        raise _ToolFailed(" ".join(texts).strip() or "the tool reported an error")
    structured = data.get("structuredContent")
    if structured is not None:
        return structured
    if blocks and len(texts) == len(blocks):
        values = [_parsed(text) for text in texts]
        return values[0] if len(values) == 1 else values
    return [dict(block) for block in blocks]


def _parsed(text: str) -> Any:
    """A JSON object or array is parsed; any other text stays text (an id stays a string)."""
    if text.lstrip()[:1] in ("{", "["):
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:
            return text
    return text


def _as_dict(value: Any) -> dict[str, Any]:
    """JSON data from a mapping or from an SDK (pydantic) model of it."""
    if isinstance(value, Mapping):
        return dict(value)
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        data = dump(mode="json", by_alias=True, exclude_none=True)
        return data if isinstance(data, dict) else {}
    return {}


def _json_default(value: Any) -> Any:
    if isinstance(value, set | frozenset):
        return list(value)
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return str(value)


def _stand_in(function: str) -> Callable[..., Any]:
    """A host function the program can hold and call later (a call comes back as a Call)."""

    def tool(*args: Any, **kwargs: Any) -> Any:  # never run on the host
        raise RuntimeError(f"{function} is only callable inside a program")

    tool.__name__ = tool.__qualname__ = function
    return tool


def _system_call_refusal(name: str) -> str:
    if name.startswith(("time.", "datetime.", "date.")):
        what = "read the clock"
    elif name.startswith("os.get") or name == "os.environ":
        what = "read the environment"
    else:
        what = "use files or the operating system"
    return (
        f"the program tried to {what} ({name}); a Code Mode program has no files, network or clock"
    )


# --- the meta-tools -------------------------------------------------------------------------


def meta_tool_definitions(
    stubs: Mapping[str, ToolStub], limits: Limits = DEFAULT_LIMITS, *, prefix: str = ""
) -> list[dict[str, Any]]:
    """The three tools that replace `stubs` in tools/list (kept short: they are the saving)."""
    servers = sorted({name.split("__", 1)[0] for name in stubs if "__" in name})
    scope = f" of {', '.join(servers)}" if servers else ""
    example = min((stub.function for stub in stubs.values()), default="some_tool")
    text = {"type": "string"}
    return [
        {
            "name": prefix + SEARCH_TOOLS,
            "description": (
                f"Find tools among the {len(stubs)} tools{scope} by keyword: names and "
                f"one-line summaries. Call them from {prefix}{RUN_PROGRAM}."
            ),
            "inputSchema": _schema("query", {**text, "description": "keywords; empty lists all"}),
        },
        {
            "name": prefix + GET_TOOL,
            "description": "Show one tool's Python signature and documentation.",
            "inputSchema": _schema("name", text),
        },
        {
            "name": prefix + RUN_PROGRAM,
            "description": (
                "Run a short Python program that calls tools as plain functions with keyword "
                f"arguments (no await), e.g. `r = {example}(x=1)`. No imports, "
                "files, network or clock. Its last expression is the result; print() output "
                f"comes back too. Limits: {limits.max_tool_calls} tool calls, "
                f"{limits.wall_seconds:g} s."
            ),
            "inputSchema": _schema("source", text),
        },
    ]


def _schema(name: str, prop: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": {name: prop}, "required": [name]}


def search_tools(stubs: Mapping[str, ToolStub], query: str, *, limit: int = SEARCH_RESULTS) -> str:
    matches = find(stubs.values(), query)
    if not matches:
        return f"No tool matches {query!r}; an empty query lists all {len(stubs)} tools."
    lines = [f"{stub.function}: {stub.summary}" for stub in matches[:limit]]
    if len(matches) > limit:
        lines.append(f"… {len(matches) - limit} more; narrow the query.")
    return "\n".join(lines)


def get_tool(stubs: Mapping[str, ToolStub], name: str) -> str | None:
    """The stub's docs by Python name or tool name; None when there is no such tool."""
    for stub in stubs.values():
        if name in (stub.function, stub.name):
            return stub.docs()
    return None


class CodeMode:
    """The meta-tools for a set of MCP tool definitions, ready to list and to call."""

    def __init__(
        self, tools: Iterable[Any], *, limits: Limits = DEFAULT_LIMITS, prefix: str = ""
    ) -> None:
        self.stubs = build_stubs(_as_dict(tool) for tool in tools)
        self.limits = limits
        self.prefix = prefix

    def definitions(self) -> list[dict[str, Any]]:
        return meta_tool_definitions(self.stubs, self.limits, prefix=self.prefix)

    def handles(self, name: str) -> bool:
        return name in {self.prefix + meta for meta in (SEARCH_TOOLS, GET_TOOL, RUN_PROGRAM)}

    async def call(
        self, name: str, arguments: Mapping[str, Any] | None, *, call_tool: CallTool
    ) -> dict[str, Any]:
        """Answer a meta-tool call with an MCP CallToolResult (as JSON data)."""
        meta = name.removeprefix(self.prefix)
        field = {SEARCH_TOOLS: "query", GET_TOOL: "name", RUN_PROGRAM: "source"}.get(meta)
        value = (arguments or {}).get(field or "")
        if field is None or not self.handles(name):
            return _text_result(f"unknown Code Mode tool {name!r}", error=True)
        if not isinstance(value, str):
            return _text_result(f"{name} needs a string argument {field!r}", error=True)
        if meta == SEARCH_TOOLS:
            return _text_result(search_tools(self.stubs, value))
        if meta == GET_TOOL:
            return self._get_tool(value)
        result = await run_program(value, tools=self.stubs, call_tool=call_tool, limits=self.limits)
        return result.to_call_tool_result()

    def _get_tool(self, name: str) -> dict[str, Any]:
        docs = get_tool(self.stubs, name)
        if docs is not None:
            return _text_result(docs)
        known = [stub.function for stub in self.stubs.values()]
        close = difflib.get_close_matches(name, known, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        return _text_result(f"No tool is named {name!r}.{hint}", error=True)


def _text_result(text: str, *, error: bool = False) -> dict[str, Any]:
    return {"content": [{"type": "text", "text": text}], "isError": error}


__all__ = [
    "DEFAULT_LIMITS",
    "GET_TOOL",
    "RESULT_DOC",
    "RUN_PROGRAM",
    "SEARCH_TOOLS",
    "CallTool",
    "CodeMode",
    "Limits",
    "ProgramResult",
    "ToolRefused",
    "ToolResult",
    "ToolStub",
    "build_stubs",
    "check_source",
    "get_tool",
    "meta_tool_definitions",
    "program_value",
    "run_program",
    "search_tools",
]
