"""What every HTTP test double's request handler shares: HTTP/1.1, quiet logs, one dispatcher."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class DoubleHandler(BaseHTTPRequestHandler):
    """Subclasses implement `_handle()`; `self.double` is the double that owns the server."""

    protocol_version = "HTTP/1.1"

    @property
    def double(self):
        return self.server.double

    def log_message(self, format, *args) -> None:  # quiet: tests read counts, not access logs
        pass

    def _handle(self) -> None:
        raise NotImplementedError

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def do_PATCH(self) -> None:
        self._handle()


class ThreadedDouble:
    """Start/stop a double's HTTP server on a free loopback port, in a daemon thread."""

    handler: type[DoubleHandler]
    thread_name = "test-double"
    _server: ThreadingHTTPServer | None = None

    def start(self):
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self.handler)
        self._server.daemon_threads = True
        self._server.double = self
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                         name=self.thread_name, daemon=True).start()
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
