"""uvicorn's httptools protocol with a deadline on each request and a cap on connections.

uvicorn times out idle keep-alive connections only: a client that trickles a
request's head (slowloris) or body keeps its connection, and its slot, for as
long as it likes. Here each request must arrive whole within
``request_timeout`` of its first byte (or of the connection opening), and a
process holding ``max_connections`` closes further connections at once;
uvicorn's own ``limit_concurrency`` (the same number) answers 503 to requests
beyond it. Both are fleet.yaml settings; `berth serve` hands them to every
worker process through the environment and uvicorn's config. httptools sets no
bound on a request's head either (h11's max_incomplete_event_size does not
apply to it): a URL plus headers over MAX_HEAD_BYTES closes the connection.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

REQUEST_TIMEOUT_ENV = "BERTH_FLEET_REQUEST_TIMEOUT_S"
DEFAULT_REQUEST_TIMEOUT_S = 10.0
# Far above any agent's or FleetLock client's request head (well under 1 KiB).
MAX_HEAD_BYTES = 64 * 1024


class GuardedHttpProtocol(HttpToolsProtocol):
    def __init__(self, config: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        self.request_timeout_s = float(
            os.environ.get(REQUEST_TIMEOUT_ENV, DEFAULT_REQUEST_TIMEOUT_S)
        )
        self.max_connections: int | None = config.limit_concurrency
        self._deadline: asyncio.TimerHandle | None = None
        self._head_bytes = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if self.max_connections is not None and len(self.connections) > self.max_connections:
            transport.close()
            return
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_bytes = 0
        if self._deadline is None:
            self._arm()

    def on_url(self, url: bytes) -> None:
        self._count_head(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_head(len(name) + len(value))
        super().on_header(name, value)

    def _count_head(self, size: int) -> None:
        self._head_bytes += size
        if self._head_bytes > MAX_HEAD_BYTES and not self.transport.is_closing():
            self.transport.close()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._disarm()  # the request is in; the keep-alive timeout covers what follows

    def _arm(self) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(self.request_timeout_s, self._too_slow)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _too_slow(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            self.transport.close()
