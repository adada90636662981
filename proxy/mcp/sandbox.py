"""The Code Mode sandbox: Monty (pydantic-monty) worker processes, driven from the event loop.

A program runs in a `monty` worker subprocess from a per-process pool (`pydantic_monty.Monty`).
Monty is a Python interpreter written in Rust: it has no access to the host beyond what the
host answers. Whatever the program does outside its own heap stops it and hands control back
here as a step: a call to a function it does not define (a tool), a read of an undefined
name, or an operating-system call (open, pathlib, os, the clock). The host answers each step
and resumes the program. The worker enforces compute time, heap size and the number of
suspensions itself; the pool kills a worker that overruns a turn (`request_timeout`).

Each blocking call into the pool (check-out, start, resume) runs on this module's threads, so
the event loop never waits on the interpreter. A run abandoned mid-turn (the caller's wall
time ran out, or it was cancelled) is released once that turn ends, which the worker's own
limits bound.

The pool is Monty's synchronous one: its asyncio twin (`AsyncMonty`) aborted the interpreter
at exit in 6 of 24 short runs (3 of 8 on Python 3.11 and on 3.13: one of its tokio threads
called back into Python during finalization), while the synchronous pool, closed or left
open, exited cleanly every time (36 runs).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import pydantic_monty as monty

logger = logging.getLogger("gateway.mcp")

PROGRAM_NAME = "program.py"
MAX_WORKERS = max(2, os.cpu_count() or 2)
# Threads block only while a turn runs or a session is checked in or out; waiting for a free
# worker is polled from the event loop, so a few threads per worker are plenty.
_EXECUTOR = concurrent.futures.ThreadPoolExecutor(
    max_workers=4 * MAX_WORKERS, thread_name_prefix="codemode"
)
_CHECKOUT_POLL_SECONDS = 0.02
# Seconds past the compute limit before the pool kills a worker that did not stop itself.
_TURN_GRACE_SECONDS = 2.0
# No clock, no entropy-dependent randomness, and sleeping costs nothing (it cannot stall).
_OS_POLICY: monty.OSPolicy = {
    "datetime": "call_host",
    "sleep": "zero",
    "process_time": "zero",
    "random_start": {"seed": 0},
}
_POOLS: dict[float, monty.Monty] = {}
_POOLS_LOCK = threading.Lock()

T = TypeVar("T")
ErrorKind = Literal["runtime", "syntax", "time", "memory", "tool_calls", "busy", "crashed"]


@dataclass(frozen=True, slots=True)
class Limits:
    """What one program may use. Every figure is enforced; none is advisory."""

    wall_seconds: float = 30.0  # the whole run: tool calls, waiting for a sandbox, compute
    cpu_seconds: float = 5.0  # the interpreter's own running time
    memory_bytes: int = 64 * 1024 * 1024  # the program's heap
    max_tool_calls: int = 50
    max_result_bytes: int = 64 * 1024  # the result returned to the model, as JSON
    max_output_bytes: int = 16 * 1024  # print() output kept for the model

    def __post_init__(self) -> None:
        if not 0 < self.cpu_seconds <= self.wall_seconds:
            raise ValueError("Limits need 0 < cpu_seconds <= wall_seconds")
        if min(self.memory_bytes, self.max_result_bytes, self.max_output_bytes) <= 0:
            raise ValueError("Limits need positive byte limits")
        if self.max_tool_calls < 0:
            raise ValueError("Limits need max_tool_calls >= 0")


@dataclass(frozen=True, slots=True)
class Call:
    """The program called a function it does not define."""

    function: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]


@dataclass(frozen=True, slots=True)
class SystemCall:
    """The program reached for the operating system: a file, a directory, the clock."""

    name: str


@dataclass(frozen=True, slots=True)
class NameLookup:
    """The program read a name it does not define (without calling it)."""

    name: str


@dataclass(frozen=True, slots=True)
class Done:
    value: Any


Step = Call | SystemCall | NameLookup | Done


class SandboxError(Exception):
    """The program stopped: an uncaught exception, a limit, or a dead worker."""

    def __init__(self, kind: ErrorKind, message: str) -> None:
        super().__init__(message)
        self.kind: ErrorKind = kind
        self.message = message


class Session:
    """One program in one checked-out worker. Not safe for concurrent use."""

    def __init__(self, session: monty.MontySession, *, output_limit: int) -> None:
        self._session = session
        self._snapshot: Any = None
        self._pending: concurrent.futures.Future[Any] | None = None
        self._closed = False
        self._lock = threading.Lock()
        self.output = _Output(output_limit)

    @classmethod
    async def open(cls, limits: Limits, *, deadline: float) -> Session:
        """Check out a worker, waiting (until `deadline`, loop time) while all are busy."""
        pool = await _in_thread(_pool, limits.cpu_seconds + _TURN_GRACE_SECONDS)
        loop = asyncio.get_running_loop()
        resource_limits: monty.ResourceLimits = {
            "max_feed_duration_secs": limits.cpu_seconds,
            "max_memory": limits.memory_bytes,
            # Tool calls are counted (and refused) by the caller first; this is the backstop
            # for name lookups and refused system calls that a program might loop over.
            "max_suspensions": 2 * limits.max_tool_calls + 16,
        }
        while True:
            checkout = pool.checkout(
                script_name=PROGRAM_NAME, limits=resource_limits, os_policy=_OS_POLICY
            )
            try:
                session = await _in_thread(checkout.__enter__, on_abandon=_exit_quietly(checkout))
            except TimeoutError:
                if loop.time() + _CHECKOUT_POLL_SECONDS >= deadline:
                    raise SandboxError(
                        "busy", "every Code Mode sandbox stayed busy; try again shortly"
                    ) from None
                await asyncio.sleep(_CHECKOUT_POLL_SECONDS)
                continue
            return cls(session, output_limit=limits.max_output_bytes)

    async def start(self, source: str) -> Step:
        return await self._turn(self._session.feed_start, source, print_callback=self.output)

    async def answer(self, value: Any) -> Step:
        """Resume a Call with the function's return value."""
        return await self._turn(self._snapshot.resume, {"return_value": value})

    async def raise_in_program(self, exc_type: monty.ExcType, message: str) -> Step:
        """Resume a Call or SystemCall by raising an exception where the program made it."""
        return await self._turn(self._snapshot.resume, {"exc_type": exc_type, "message": message})

    async def provide(self, value: Any) -> Step:
        """Resume a NameLookup with a value (None: the name stays undefined, NameError)."""
        if value is None:
            return await self._turn(self._snapshot.resume)
        return await self._turn(self._snapshot.resume, value=value)

    def close(self) -> None:
        """Give the worker back; after the turn in flight, if any (never blocks the loop)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        release = _exit_quietly(self._session)
        if self._pending is not None:
            self._pending.add_done_callback(lambda _: release(None))
        else:
            _EXECUTOR.submit(release, None)

    async def _turn(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Step:
        future = _EXECUTOR.submit(_translated, method, *args, **kwargs)
        self._pending = future
        self._snapshot = await asyncio.wrap_future(future)
        self._pending = None
        return _step(self._snapshot)


class _Output:
    """print() output, kept up to a byte limit (more is dropped, and the cut is marked)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.parts: list[str] = []
        self.size = 0
        self.cut = False

    def __call__(self, stream: Literal["stdout", "stderr"], text: str) -> None:
        room = self.limit - self.size
        if room <= 0:
            self.cut = True
            return
        kept = text.encode()[:room].decode(errors="ignore")
        self.cut = self.cut or len(kept) < len(text)
        self.parts.append(kept)
        self.size += len(kept.encode())

    def text(self) -> str:
        joined = "".join(self.parts)
        return joined + "\n[print output cut at the limit]" if self.cut else joined


def _step(snapshot: Any) -> Step:
    if isinstance(snapshot, monty.MontyComplete):
        return Done(snapshot.output)
    if isinstance(snapshot, monty.NameLookupSnapshot):
        return NameLookup(snapshot.variable_name)
    if isinstance(snapshot, monty.FunctionSnapshot):
        if snapshot.is_os_function:
            return SystemCall(str(snapshot.function_name))
        return Call(str(snapshot.function_name), tuple(snapshot.args), dict(snapshot.kwargs))
    # Futures only come from answering with a future, which this host never does.
    raise SandboxError("runtime", f"unsupported program step: {type(snapshot).__name__}")


def _translated(method: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run one blocking sandbox call, turning Monty's errors into SandboxError."""
    try:
        return method(*args, **kwargs)
    except monty.MontySyntaxError as error:
        raise SandboxError("syntax", error.display("traceback")) from None
    except monty.MontyRuntimeError as error:
        raise SandboxError(_kind_of(error.exception()), error.display("traceback")) from None
    except monty.MontyCrashedError as error:
        if error.timed_out:
            raise SandboxError("time", "the program overran its time limit") from None
        logger.warning("a Code Mode sandbox worker died: %s", error)
        raise SandboxError("crashed", "the sandbox stopped unexpectedly") from None


def _kind_of(exception: BaseException) -> ErrorKind:
    if isinstance(exception, TimeoutError):
        return "time"
    if isinstance(exception, MemoryError):
        return "memory"
    if isinstance(exception, RuntimeError) and "suspension limit" in str(exception):
        return "tool_calls"
    return "runtime"


def _pool(request_timeout: float) -> monty.Monty:
    """The process's worker pool for this per-turn deadline (in practice there is one)."""
    with _POOLS_LOCK:
        pool = _POOLS.get(request_timeout)
        if pool is None:
            pool = monty.Monty(
                min_processes=1,
                max_processes=MAX_WORKERS,
                checkout_timeout=0.0,  # waiting is polled from the loop, not a thread
                request_timeout=request_timeout,
            )
            pool.__enter__()
            _POOLS[request_timeout] = pool
        return pool


def close_pools() -> None:
    """Stop every worker (for shutdown; a later program starts a new pool)."""
    with _POOLS_LOCK:
        pools = list(_POOLS.values())
        _POOLS.clear()
    for pool in pools:
        pool.__exit__(None, None, None)


def _exit_quietly(checkout: Any) -> Callable[[Any], None]:
    def exit_checkout(entered: concurrent.futures.Future[Any] | None) -> None:
        # `entered` is the check-out's own future when it was abandoned: only a check-out
        # that succeeded holds a worker.
        if entered is not None and (entered.cancelled() or entered.exception() is not None):
            return
        try:
            checkout.__exit__(None, None, None)
        except Exception:
            logger.warning("could not return a Code Mode sandbox to its pool", exc_info=True)

    return exit_checkout


async def _in_thread(
    function: Callable[..., T],
    *args: Any,
    on_abandon: Callable[[concurrent.futures.Future[T]], None] | None = None,
) -> T:
    future = _EXECUTOR.submit(function, *args)
    try:
        return await asyncio.wrap_future(future)
    except asyncio.CancelledError:
        if on_abandon is not None:
            future.add_done_callback(on_abandon)
        raise


__all__ = [
    "Call",
    "Done",
    "Limits",
    "NameLookup",
    "SandboxError",
    "Session",
    "Step",
    "SystemCall",
    "close_pools",
]
