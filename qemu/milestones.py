"""When a booting host reached what provisioning promises, on the host's clock.

Seconds from the moment QEMU was started:
  provisioned  berth-provision's "provisioned:" line on the serial console
  answering    the declared container's page fetched through a forwarded port
  ready        BERTH-READY (boot-complete.target reached), for comparison

Read from the console log with a reader of its own (the harness's reader is the
test's), so a watcher thread can run beside the tests of the same boot.
"""

from __future__ import annotations

import re
import threading
import time
import urllib.request
from pathlib import Path

from qemu.console import ConsoleLog
from qemu.ready import PATTERN as READY_PATTERN

PROVISIONED = re.compile(r"berth-provision: provisioned: (\S+) from ([^\s;]+)")
NAMES = ("provisioned", "answering", "ready")


def page_answers(port: int, page: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as response:
            return bool(response.read().decode().strip() == page)
    except OSError:
        return False


class Milestones:
    def __init__(self, serial_log: Path, started: float, port: int, page: str) -> None:
        self.console = ConsoleLog(serial_log)
        self.started = started  # time.monotonic() just before QEMU was started
        self.port = port
        self.page = page
        self.seen: dict[str, float] = {}
        self.applied = ""  # "declared from nocloud", ...
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def check(self) -> bool:
        """Look once; True when every milestone has been seen."""
        text = self.console.text
        now = time.monotonic() - self.started
        match = PROVISIONED.search(text)
        if "provisioned" not in self.seen and match:
            self.seen["provisioned"], self.applied = now, f"{match[1]} from {match[2]}"
        if "ready" not in self.seen and READY_PATTERN.search(text):
            self.seen["ready"] = now
        if "provisioned" in self.seen and "answering" not in self.seen and page_answers(self.port, self.page):
            self.seen["answering"] = time.monotonic() - self.started
        return len(self.seen) == len(NAMES)

    def watch(self, interval: float = 0.5) -> Milestones:
        """Keep checking in a thread until all are seen or stop() is called."""
        def loop() -> None:
            while not self._stop.is_set() and not self.check():
                self._stop.wait(interval)

        self._thread = threading.Thread(target=loop, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def figures(self) -> dict[str, object]:
        return {"applied": self.applied, **{f"{name}_s": round(self.seen[name], 1)
                                            for name in NAMES if name in self.seen}}
