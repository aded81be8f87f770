"""Power-cut injection for tests: SIGKILL the agent right after its Nth durable write.

Every durable step (state saved, a frame fsynced, a partition table or ESP
change) calls ``durable(name)``. With BERTH_FAILPOINT_TRACE set the steps are
appended to that file; with BERTH_FAILPOINT_KILL_AT=N the process kills itself
with SIGKILL right after step N, exactly as a power cut would leave the disk.
Both unset (always, outside the tests) it only counts.
"""

from __future__ import annotations

import os
import signal

_steps = 0


def durable(name: str) -> None:
    global _steps
    _steps += 1
    trace = os.environ.get("BERTH_FAILPOINT_TRACE")
    if trace:
        with open(trace, "a") as handle:
            handle.write(f"{_steps} {name}\n")
    if os.environ.get("BERTH_FAILPOINT_KILL_AT") == str(_steps):
        os.kill(os.getpid(), signal.SIGKILL)
