"""A TCP relay on 127.0.0.1 that can take a real service "down" and bring it back.

Fault tests point the gateway at this relay instead of PostgreSQL or Redis. `stop()` cuts every
open connection and refuses new ones, exactly what a client sees when the service dies;
`start()` listens again on the same port. The service itself keeps running, so the test (and
every other test) still reaches it directly.
"""

from __future__ import annotations

import asyncio
import socket
import threading


class FaultyRelay:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name="relay")
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.StreamWriter] = set()

    def __enter__(self) -> FaultyRelay:
        self._thread.start()
        with socket.socket() as sock:  # a free port, kept for every restart
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def start(self) -> None:
        """Accept connections again."""
        self._run(self._listen())

    def stop(self) -> None:
        """Refuse new connections and reset every open one."""
        self._run(self._close())

    def _run(self, coroutine: object) -> None:
        asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(10)  # type: ignore[arg-type]

    async def _listen(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(
                self._relay, "127.0.0.1", self.port, reuse_address=True
            )

    async def _close(self) -> None:
        # Abort the open connections before waiting: since Python 3.12 `wait_closed()` waits
        # for every connection the server accepted, so waiting first would hang on them.
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for writer in list(self._connections):
            if not writer.transport.is_closing():
                writer.transport.abort()
        self._connections.clear()
        if server is not None:
            await server.wait_closed()

    async def _relay(
        self, client_reader: asyncio.StreamReader, client: asyncio.StreamWriter
    ) -> None:
        self._connections.add(client)
        try:
            service_reader, service = await asyncio.open_connection(*self.target)
        except OSError:
            client.transport.abort()
            self._connections.discard(client)
            return
        if client not in self._connections:  # the relay went down while this one connected
            service.transport.abort()
            client.transport.abort()
            return
        self._connections.add(service)
        await asyncio.gather(self._pipe(client_reader, service), self._pipe(service_reader, client))
        self._connections.discard(client)
        self._connections.discard(service)

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
            writer.close()  # the other side ended: end this one too
        except (ConnectionError, OSError):
            writer.transport.abort()
