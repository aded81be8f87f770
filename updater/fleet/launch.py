"""Start `berth serve` as a child process on a free 127.0.0.1 port (simulator, tests, bench)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from cli.errors import UserError
from updater.fleet.ca import ServerTls

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    url: str
    config: Path
    db: str
    process: subprocess.Popen[bytes]
    log: Path
    verify: str | bool = True  # what a client verifies the server's certificate against

    def kill(self) -> None:
        """SIGKILL every process of this server (its workers too): a crash, not a shutdown."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()


def write_config(workdir: Path, data: dict[str, Any]) -> Path:
    import yaml

    config = workdir / "fleet.yaml"
    config.write_text(yaml.safe_dump(data))
    return config


def start_server(
    config: Path,
    db: str,
    *,
    workers: int = 1,
    test_clock: bool = False,
    port: int | None = None,
    timeout: float = 30,
    tls: ServerTls | None = None,
) -> Server:
    """``tls``: serve HTTPS with its certificate; None: plain HTTP on 127.0.0.1 (tests)."""
    port = port or free_port()
    transport = (
        ["--tls-cert", str(tls.cert), "--tls-key", str(tls.key)] if tls else ["--insecure-http"]
    )
    log = config.with_name(f"serve-{port}.log")
    with log.open("w") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "cli.main",
                "serve",
                "--config",
                str(config),
                "--port",
                str(port),
                "--db",
                db,
                "--workers",
                str(workers),
                *transport,
                *(["--test-clock"] if test_clock else []),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            start_new_session=True,
        )
    scheme, verify = ("https", str(tls.ca)) if tls else ("http", True)
    server = Server(f"{scheme}://127.0.0.1:{port}", config, db, process, log, verify)
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(requests.RequestException):
            if requests.get(server.url + "/healthz", timeout=1, verify=verify).ok:
                return server
        if process.poll() is not None or time.monotonic() > deadline:
            stop_server(server)
            raise UserError(f"berth serve did not start: {log.read_text()[-800:]}")
        time.sleep(0.1)


def stop_server(server: Server) -> None:
    if server.process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.process.pid, signal.SIGTERM)
        try:
            server.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()


@contextlib.contextmanager
def running_server(config: Path, db: str, **options: Any) -> Iterator[Server]:
    server = start_server(config, db, **options)
    try:
        yield server
    finally:
        stop_server(server)
