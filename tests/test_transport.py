"""The fleet client's connection: kept alive, renewed when the server drops it, bounded
in time, and never unverified — against a real HTTP server on loopback."""

from __future__ import annotations

import datetime
import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

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


@contextmanager
def https_server(cert: Path, key: Path) -> Iterator[Server]:
    httpd = Server(("127.0.0.1", 0), Handler)
    httpd.peers = []
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield httpd
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_https_is_verified_against_the_given_ca_or_the_systems(tmp_path: Path) -> None:
    tls = make_server_tls(tmp_path)
    with https_server(tls.cert, tls.key) as httpd:
        assert Transport(url(httpd, "https"), verify=str(tls.ca)).post("/ok", b"1", {})[0] == 200
        with pytest.raises(TransportError, match="CERTIFICATE_VERIFY_FAILED"):
            Transport(url(httpd, "https")).post("/ok", b"1", {})  # the system's CAs do not know it


def _strict_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """Python 3.13's defaults (the host image's), on whatever Python runs the tests."""
    default = ssl.create_default_context

    def strict(*args: Any, **kwargs: Any) -> ssl.SSLContext:
        context = default(*args, **kwargs)
        context.verify_flags |= ssl.VERIFY_X509_STRICT
        return context

    monkeypatch.setattr(ssl, "create_default_context", strict)


def test_berths_own_ca_passes_x509_strict_checks(tmp_path: Path) -> None:
    tls = make_server_tls(tmp_path)
    client = ssl.create_default_context(cafile=tls.ca)
    client.verify_flags |= ssl.VERIFY_X509_STRICT
    with (
        https_server(tls.cert, tls.key) as httpd,
        socket.create_connection(httpd.server_address) as raw,
        client.wrap_socket(raw, server_hostname="127.0.0.1") as wrapped,
    ):
        assert wrapped.version()


def test_a_private_ca_the_agent_accepted_before_still_verifies_on_a_strict_python(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A CA without an Authority Key Identifier in its server certificate (what berth
    made before, and what older tooling makes) was good enough for requests; hosts must
    not lose their fleet server when the agent moves to the standard library."""
    ca_pem, cert, key = _ca_without_key_identifiers(tmp_path)
    _strict_by_default(monkeypatch)
    with https_server(cert, key) as httpd:
        assert Transport(url(httpd, "https"), verify=str(ca_pem)).post("/ok", b"1", {})[0] == 200


def _ca_without_key_identifiers(directory: Path) -> tuple[Path, Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "old CA")])

    def builder(subject: str, public: Any) -> x509.CertificateBuilder:
        return (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
                .issuer_name(ca_name).public_key(public).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1)))

    ca = builder("old CA", ca_key.public_key()).add_extension(
        x509.BasicConstraints(ca=True, path_length=0), critical=True).sign(ca_key, hashes.SHA256())
    cert = builder("old server", key.public_key()).add_extension(
        x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False
    ).sign(ca_key, hashes.SHA256())
    pem = serialization.Encoding.PEM
    paths = directory / "old-ca.pem", directory / "old-server.pem", directory / "old-server.key"
    paths[0].write_bytes(ca.public_bytes(pem))
    paths[1].write_bytes(cert.public_bytes(pem))
    paths[2].write_bytes(key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return paths


def test_only_http_and_https_urls() -> None:
    with pytest.raises(ValueError, match="not an http"):
        Transport("ftp://example.com")
