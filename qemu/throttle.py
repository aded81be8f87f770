"""A CPU quota on a QEMU process: a host as slow as a loaded machine or a small
cloud instance out of CPU credits, with the guest's clock running at real speed.

    with cpu_quota(50) as launcher:            # half of one host core
        VM(artifact, state, launcher=launcher)

Uses a cgroup of its own: cgroup v2 ``cpu.max`` where the cpu controller is
there, else cgroup v1 ``cpu.cfs_quota_us``. QMP stop/cont or ``-icount`` would
not do: both slow the guest's clock down with its CPU, so nothing in the guest
would see a slow start as slow.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
PERIOD_US = 100_000


class ThrottleUnavailable(RuntimeError):
    """No writable cgroup with a cpu controller on this machine."""


def _v2_parent() -> Path | None:
    for base in (CGROUP_ROOT, CGROUP_ROOT / "unified"):
        controllers = base / "cgroup.controllers"
        if controllers.is_file() and "cpu" in controllers.read_text().split() and os.access(base, os.W_OK):
            return base
    return None


def _v1_parent() -> Path | None:
    base = CGROUP_ROOT / "cpu"
    return base if (base / "cpu.cfs_quota_us").is_file() and os.access(base, os.W_OK) else None


@contextmanager
def cpu_quota(percent_of_one_core: int) -> Iterator[tuple[str, ...]]:
    """A launcher prefix that starts its command inside a cgroup limited to
    ``percent_of_one_core`` % of one host core; the cgroup goes afterwards."""
    if not 1 <= percent_of_one_core <= 100 * (os.cpu_count() or 1):
        raise ValueError(f"quota {percent_of_one_core} % is not between 1 % and all cores")
    quota_us = PERIOD_US * percent_of_one_core // 100
    name = f"berth-throttle-{uuid.uuid4().hex[:8]}"
    parent = _v2_parent()
    if parent is not None:
        subtree = parent / "cgroup.subtree_control"
        if "cpu" not in subtree.read_text().split():
            subtree.write_text("+cpu")
        group = parent / name
        group.mkdir()
        (group / "cpu.max").write_text(f"{quota_us} {PERIOD_US}")
    elif (parent := _v1_parent()) is not None:
        group = parent / name
        group.mkdir()
        (group / "cpu.cfs_period_us").write_text(str(PERIOD_US))
        (group / "cpu.cfs_quota_us").write_text(str(quota_us))
    else:
        raise ThrottleUnavailable("no writable cgroup (v2 cpu.max or v1 cpu.cfs_quota_us) on this host")
    try:
        # The shell moves itself into the group, then becomes the command.
        yield ("sh", "-c", 'echo $$ > "$0" && exec "$@"', str(group / "cgroup.procs"))
    finally:
        # Processes left (a QEMU that outlived its VM) go back to the parent first.
        for pid in (group / "cgroup.procs").read_text().split():
            try:
                (parent / "cgroup.procs").write_text(pid)
            except OSError:
                pass
        group.rmdir()
