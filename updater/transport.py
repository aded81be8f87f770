"""One kept-alive HTTP(S) connection to one server, on the standard library alone.

The idle agent keeps its fleet client resident between polls; on requests it
was ~10 MiB of the service's RSS and ~3 s of CPU to import on a TCG guest, for
what is one JSON POST every few seconds to one server. requests stays for the
update's downloads (updater/agent/fetch.py), which run in a forked step.

Not thread-safe: one Transport per thread (the simulator keeps one per worker).
"""

from __future__ import annotations

import http.client
import select
import ssl
from urllib.parse import urlsplit

# (connect, read) seconds. The connect bound covers the TLS handshake too.
Timeout = tuple[float, float]
# A server that does not answer within these is retried later by the caller.
DEFAULT_TIMEOUT: Timeout = (5.0, 15.0)


class TransportError(Exception):
    """No answer: the connection failed, timed out or broke mid-exchange."""


class Transport:
    def __init__(self, server_url: str, *, verify: bool | str = True, timeout: Timeout = DEFAULT_TIMEOUT) -> None:
        parts = urlsplit(server_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {server_url!r}")
        self._https = parts.scheme == "https"
        self._host, self._port = parts.hostname, parts.port
        self._base = parts.path.rstrip("/")
        self._timeout = timeout
        self._context: ssl.SSLContext | None = None
        if self._https:
            # verify: a CA bundle file, or True for the system's CAs; never unverified.
            self._context = ssl.create_default_context(cafile=verify if isinstance(verify, str) else None)
            # Python 3.13 (the host's) adds X.509 strict mode to the defaults; requests, which
            # the agent used before, never set it. A fleet's existing private CA (e.g. one
            # without an Authority Key Identifier) must keep working across an agent update:
            # chain, expiry and host name are still checked as before.
            self._context.verify_flags &= ~ssl.VERIFY_X509_STRICT
        self._connection: http.client.HTTPConnection | None = None

    def post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        """POST ``body`` to ``path`` below the server URL; (status, response body)."""
        connection = self._connected()
        try:
            connection.request("POST", self._base + path, body, {"Content-Type": "application/json", **headers})
            response = connection.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException) as error:
            self.close()
            raise _failed(error) from None
        if response.will_close:
            self.close()
        return response.status, data

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def _connected(self) -> http.client.HTTPConnection:
        if self._connection is not None and _dropped(self._connection):
            self.close()  # the server closed an idle keep-alive connection: open a new one
        if self._connection is None:
            connect_s, read_s = self._timeout
            connection = (
                http.client.HTTPSConnection(self._host, self._port, timeout=connect_s, context=self._context)
                if self._https
                else http.client.HTTPConnection(self._host, self._port, timeout=connect_s)
            )
            try:
                connection.connect()
            except OSError as error:
                connection.close()
                raise _failed(error) from None
            assert connection.sock is not None
            connection.sock.settimeout(read_s)
            self._connection = connection
        return self._connection


def _failed(error: Exception) -> TransportError:
    return TransportError(str(error) or type(error).__name__)  # a timeout's text can be empty


def _dropped(connection: http.client.HTTPConnection) -> bool:
    """An idle connection with something to read has been closed by the server
    (or sent what no request asked for): either way it cannot carry the next one."""
    sock = connection.sock
    if sock is None:
        return True
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)
