"""How long this process had a VM running: the share of a test run spent in QEMU.

VM.start() and VM.stop() record intervals here; overlapping VMs (three hosts
side by side) count once, since the figure answers "how long did the run wait
on QEMU", not "how many VM-seconds did it use".
"""

from __future__ import annotations

import time
from collections.abc import Iterable

# [start, end) in time.monotonic() seconds; end None while the VM runs.
_intervals: list[list[float | None]] = []


def covered(intervals: Iterable[tuple[float, float]]) -> float:
    """The length of the union of ``intervals`` (pure)."""
    total, reach = 0.0, float("-inf")
    for start, end in sorted(intervals):
        if end <= reach:
            continue
        total += end - max(start, reach)
        reach = end
    return total


def started() -> int:
    """Note a VM starting now; the handle to give stopped()."""
    _intervals.append([time.monotonic(), None])
    return len(_intervals) - 1


def stopped(handle: int) -> None:
    if _intervals[handle][1] is None:
        _intervals[handle][1] = time.monotonic()


def vm_seconds() -> float:
    """Seconds so far with at least one VM of this process running."""
    now = time.monotonic()
    return covered((float(s or 0.0), float(now if e is None else e)) for s, e in _intervals)
