"""Files served over HTTP on the host's 127.0.0.1, for a guest to fetch through a
host service (qemu/machine.py ``host_services``): e.g. a container archive a
declaration names by URL, where a cloud host would fetch it from an object store."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _Files(BaseHTTPRequestHandler):
    files: Mapping[str, bytes]
    fetched: list[str]

    def do_GET(self) -> None:
        body = self.files.get(self.path)
        self.fetched.append(self.path)
        self.send_response(404 if body is None else 200)
        self.send_header("Content-Length", str(len(body or b"")))
        self.end_headers()
        self.wfile.write(body or b"")

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def serve_files(files: Mapping[str, bytes], fetched: list[str] | None = None) -> Iterator[int]:
    """Serve ``{"/path": bytes}`` until the block ends; yields the port. Each GET's
    path is appended to ``fetched``."""
    handler = type("Files", (_Files,), {"files": dict(files), "fetched": fetched if fetched is not None else []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
