"""QEMU's machine protocol (QMP) through the ``qemu.qmp`` library, synchronously.

The library is asyncio-based; the harness is not. Each Monitor runs its own
private event loop, so it neither needs nor disturbs a loop of the caller's.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from qemu.qmp import ConnectError, QMPClient, QMPError

# What talking to a QEMU that is going or gone raises.
_GONE = (QMPError, EOFError, OSError, TimeoutError)


class Monitor:
    def __init__(
        self, socket_path: Path, running: Callable[[], bool], timeout: float = 30.0
    ) -> None:
        self._loop = asyncio.new_event_loop()
        self._client = QMPClient("berth")
        self._timeout = timeout
        deadline = time.monotonic() + timeout
        # QEMU creates the socket shortly after it starts; wait for it.
        while True:
            try:
                # Connecting to a socket not there yet would be logged as an ERROR by the library.
                if not socket_path.exists():
                    raise FileNotFoundError(socket_path)
                self._run(self._client.connect(str(socket_path)))
                return
            except (ConnectError, OSError):
                if time.monotonic() >= deadline or not running():
                    self._loop.close()
                    raise
                time.sleep(0.1)

    def _run(self, awaitable: Any) -> Any:
        return self._loop.run_until_complete(asyncio.wait_for(awaitable, self._timeout))

    def execute(self, command: str, arguments: dict[str, object] | None = None) -> Any:
        return self._run(self._client.execute(command, arguments))

    def status(self) -> str:
        """QEMU's run state: running, paused, internal-error, shutdown, ..."""
        return str(self.execute("query-status")["status"])

    def power_button(self) -> None:
        """Press the ACPI power button: the guest shuts down cleanly."""
        self.execute("system_powerdown")

    def hard_reset(self) -> None:
        """Reset the machine at once, as the reset switch would (no clean shutdown)."""
        self.execute("system_reset")

    def quit(self) -> None:
        """Stop QEMU now (the disk image stays consistent; the guest is not asked)."""
        try:
            self.execute("quit")
        except _GONE:
            pass  # QEMU may close the socket before it answers

    def close(self) -> None:
        try:
            self._run(self._client.disconnect())
        except _GONE:
            pass  # a QEMU that quit has closed its end already
        finally:
            self._loop.close()
