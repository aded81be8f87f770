"""Scenario 4: three hosts in one group take v2 under a reboot lock and a rate limit.

Read back from the fleet server's records (each host's reports with the server's
times): reboots (rebooting -> blessed, inside the FleetLock the agent holds from
before its reboot until after its bless) never overlap, no more updates start per
period or run at once than the rate allows, and all three end blessed on v2.
The VMs get one virtual CPU each: three TCG guests share this machine's two cores.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from qemu.lab import V1, V2, Lab, lab_group

pytestmark = [
    pytest.mark.slow,
    pytest.mark.qemu,
    pytest.mark.skip(
        reason="scenario 4 has not yet run to completion here: three TCG guests on two cores take about 30 minutes; issue 6 stays open for it"
    ),
]
GROUP = "fleet"
MAX_UPDATES, PERIOD_S = 2, 60


def overlapping(intervals: list[tuple[float, float]]) -> int:
    """The most intervals that are open at one moment."""
    edges = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    most = open_now = 0
    for _, step in edges:
        open_now += step
        most = max(most, open_now)
    return most


def test_three_hosts_reboot_one_at_a_time_within_the_rate(
    tmp_path: Path, release: Callable[[str], Path], narrate: Callable[[str], None]
) -> None:
    policy = lab_group(max_concurrent_reboots=1, rate={"max_updates": MAX_UPDATES, "period": f"{PERIOD_S}s"})
    with Lab(tmp_path, narrate) as lab:
        lab.publish(release(V1))
        with lab.serve({GROUP: policy}):
            hosts = [lab.boot(f"host{i}", release(V1), group=GROUP, cpus=1) for i in (1, 2, 3)]
            for host in hosts:
                assert host.wait_ready(900).version == V1
            lab.publish(release(V2))
            reports = {host.name: lab.follow(host, V2, ("blessed", "rolled_back", "failed"), 3600)
                       for host in hosts}
            fleet = lab.admin("/admin/status")["groups"][GROUP]

    for name, events in reports.items():
        assert [r["event"] for r in events] == ["downloading", "staged", "rebooting", "blessed"], name
    at = {name: {r["event"]: r["at"] for r in events} for name, events in reports.items()}
    reboots = [(t["rebooting"], t["blessed"]) for t in at.values()]
    assert overlapping(reboots) == 1  # one reboot at a time
    updates = sorted((t["downloading"], t["blessed"]) for t in at.values())
    assert overlapping(updates) <= MAX_UPDATES  # never more in flight than the rate allows
    starts = [start for start, _ in updates]
    assert all(sum(1 for s in starts if 0 <= t - s < PERIOD_S) <= MAX_UPDATES for t in starts)
    assert fleet["hosts_by_version"] == {V2: 3}
    assert fleet["locks_held"] == []
