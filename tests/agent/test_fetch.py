"""The agent's HTTP fetcher: range requests share one kept-alive connection, and a
range answer of the wrong size is refused."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from tuf.api.exceptions import DownloadError

from updater.agent.fetch import RequestsFetcher

BLOB = bytes(range(256)) * 4096  # 1 MiB


class _KeepAliveServer(ThreadingHTTPServer):
    """HTTP/1.1 with keep-alive, as `berth serve` (uvicorn) answers; counts connections."""

    connections = 0
    extra = 0  # bytes sent beyond each asked range (a broken server)

    def get_request(self):  # type: ignore[no-untyped-def]
        self.connections += 1
        return super().get_request()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _KeepAliveServer

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        first, last = (int(x) for x in self.headers["Range"].removeprefix("bytes=").split("-"))
        body = BLOB[first:last + 1] + b"x" * self.server.extra
        self.send_response(206)
        self.send_header("Content-Range", f"bytes {first}-{last}/{len(BLOB)}")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def keep_alive() -> Iterator[tuple[_KeepAliveServer, str]]:
    httpd = _KeepAliveServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield httpd, f"http://127.0.0.1:{httpd.server_address[1]}/blob"
    httpd.shutdown()
    httpd.server_close()


def test_range_requests_reuse_one_connection(keep_alive: tuple[_KeepAliveServer, str]) -> None:
    httpd, url = keep_alive
    fetcher = RequestsFetcher()
    spans = [(at, at + 4096 * (1 + at % 3)) for at in range(0, 40 * 8192, 8192)]
    for start, end in spans:
        assert fetcher.range(url, start, end) == BLOB[start:end]
    # One TCP (on a fleet server: TLS) handshake for all of a delta's ranges, not one each.
    assert httpd.connections == 1


def test_a_range_answer_longer_than_asked_is_refused(keep_alive: tuple[_KeepAliveServer, str]) -> None:
    httpd, url = keep_alive
    httpd.extra = 10
    with pytest.raises(DownloadError, match="bytes for the range 0-4095"):
        RequestsFetcher().range(url, 0, 4096)
