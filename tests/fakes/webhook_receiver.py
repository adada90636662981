"""A local HTTP receiver for alert webhooks: records every request and answers with scripted
statuses (or drops the connection), so delivery and retries are tested over a real socket."""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

DROP = 0  # a scripted "status" that closes the connection without answering


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class WebhookReceiver:
    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.requests: list[Received] = []
        self.replies: deque[int] = deque()
        self.delay = 0.0
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length)
                headers = {k.lower(): v for k, v in self.headers.items()}
                with receiver._lock:
                    receiver.requests.append(Received(self.path, headers, body))
                    status = receiver.replies.popleft() if receiver.replies else 200
                if receiver.delay:
                    time.sleep(receiver.delay)
                if status == DROP:
                    self.close_connection = True
                    self.connection.close()
                    return
                reply = b"ok" if status < 400 else b"boom"
                self.send_response(status)
                self.send_header("content-length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"

    def url(self, path: str = "/hook") -> str:
        return self.base_url + path

    def script(self, *statuses: int) -> None:
        """Answer the next requests with these statuses (DROP closes the connection)."""
        with self._lock:
            self.replies.extend(statuses)

    def bodies(self) -> list[Any]:
        with self._lock:
            return [r.json() for r in self.requests]

    def start(self) -> WebhookReceiver:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
