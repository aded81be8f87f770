"""`make test`: the suite as two pytest runs side by side on this machine's cores.

The slow half (mkosi builds, QEMU boots: marker ``slow``) runs in front, as it always did,
and leaves a core idle for stretches: a guest waiting on its disk, a test waiting on a
poll. The rest (unit, property, fleet-server tests) needs no image and no VM, so it runs
meanwhile in a second process at a lower CPU priority, taking what the VMs leave; its
output follows the slow half's. Each half prints its own time budget, then this prints
the whole run's. Arguments are pytest's, given to both halves (`make test PYTEST_ARGS=…`);
a selection by marker of one's own is pytest's job (`python -m pytest -m …`).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Niceness of the fast half: it yields most of a contended core to the guests (whose boots
# the harness bounds), and still has every idle one. Measured: see the README's suite section.
FAST_NICENESS = 10
# pytest's exit code when a half's selection is empty (say, PYTEST_ARGS names only unit tests).
NO_TESTS = 5


def pytest(marker: str, args: list[str]) -> list[str]:
    return [sys.executable, "-m", "pytest", "-m", marker, *args]


def combined(codes: tuple[int, int]) -> int:
    """One exit code for the two halves: a failure wins; nothing selected only if in both."""
    ran = [code for code in codes if code != NO_TESTS]
    if not ran:
        return NO_TESTS
    return next((code for code in ran if code != 0), 0)


def main(args: list[str]) -> int:
    started = time.monotonic()
    with tempfile.NamedTemporaryFile("w+", prefix="berth-fast-tests-", suffix=".log") as log:
        print(f"the fast tests run alongside at nice {FAST_NICENESS}; their output follows "
              f"(meanwhile: tail -f {log.name})", flush=True)
        fast = subprocess.Popen(["nice", "-n", str(FAST_NICENESS),
                                 # The slow half keeps .pytest_cache: two writers would lose failures.
                                 *pytest("not slow and not throttled", ["-p", "no:cacheprovider", *args])],
                                stdout=log, stderr=subprocess.STDOUT)
        try:
            slow_code = subprocess.call(pytest("slow and not throttled", args))
            fast_code = fast.wait()
        finally:
            if fast.poll() is None:
                fast.terminate()
                fast.wait()
        print(f"\n{'=' * 30} the fast tests (nice {FAST_NICENESS}, alongside) {'=' * 30}", flush=True)
        sys.stdout.write(Path(log.name).read_text(errors="replace"))
    code = combined((slow_code, fast_code))
    wall = time.monotonic() - started
    print(f"make test: both halves in {int(wall // 60)} min {wall % 60:.0f} s "
          f"(slow half exit {slow_code}, fast half exit {fast_code})", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
