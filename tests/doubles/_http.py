"""What every HTTP test double's request handler shares: HTTP/1.1, quiet logs, one dispatcher."""

from __future__ import annotations

from http.server import BaseHTTPRequestHandler


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
