"""The fleet client's connection: kept alive, renewed when the server drops it, bounded
in time, and never unverified — against a real HTTP server on loopback."""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from updater.fleet.ca import make_server_tls
from updater.transport import Transport, TransportError


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as berth serve (uvicorn) answers

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        server: Server = self.server  # type: ignore[assignment]
        server.peers.append(self.client_address)
        if self.path.endswith("/slow"):
            time.sleep(2)
        if self.path.endswith("/drop"):
            self.close_connection = True  # answers, then closes: the next request reconnects
        answer = b'{"path": "%s", "echo": %s}' % (self.path.encode(), body)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args: object) -> None:
        pass


class Server(ThreadingHTTPServer):
    daemon_threads = True
    peers: list[tuple[str, int]]


@pytest.fixture
def server() -> Iterator[Server]:
    httpd = Server(("127.0.0.1", 0), Handler)
    httpd.peers = []
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def url(httpd: Server, scheme: str = "http", base: str = "/api") -> str:
    return f"{scheme}://127.0.0.1:{httpd.server_address[1]}{base}"


def test_posts_below_the_base_path_on_one_kept_alive_connection(server: Server) -> None:
    transport = Transport(url(server))
    for n in range(3):
        status, body = transport.post("/v1/check", b'{"n": %d}' % n, {"X-Test": "1"})
        assert status == 200 and body == b'{"path": "/api/v1/check", "echo": {"n": %d}}' % n
    assert len({port for _, port in server.peers}) == 1


def test_a_connection_the_server_closed_is_replaced_before_the_next_request(server: Server) -> None:
    transport = Transport(url(server))
    assert transport.post("/drop", b"1", {})[0] == 200
    time.sleep(0.2)  # the server's close reaches the idle socket
    assert transport.post("/after", b"2", {}) == (200, b'{"path": "/api/after", "echo": 2}')
    assert len({port for _, port in server.peers}) == 2


def test_a_server_that_does_not_answer_in_time_is_an_error_not_a_hang(server: Server) -> None:
    transport = Transport(url(server), timeout=(1.0, 0.5))
    started = time.monotonic()
    with pytest.raises(TransportError, match="timed out"):
        transport.post("/slow", b"1", {})
    assert time.monotonic() - started < 1.9
    assert transport.post("/fast", b"2", {})[0] == 200  # a fresh connection afterwards


def test_nothing_listening_is_an_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(TransportError, match="refused"):
        Transport(f"http://127.0.0.1:{port}").post("/x", b"", {})


def test_https_is_verified_against_the_given_ca_or_the_systems(tmp_path: Path) -> None:
    tls = make_server_tls(tmp_path)
    httpd = Server(("127.0.0.1", 0), Handler)
    httpd.peers = []
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tls.cert, tls.key)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        assert Transport(url(httpd, "https"), verify=str(tls.ca)).post("/ok", b"1", {})[0] == 200
        with pytest.raises(TransportError, match="CERTIFICATE_VERIFY_FAILED"):
            Transport(url(httpd, "https")).post("/ok", b"1", {})  # the system's CAs do not know it
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_only_http_and_https_urls() -> None:
    with pytest.raises(ValueError, match="not an http"):
        Transport("ftp://example.com")
