"""Scenario 4: three hosts in one group take v2 under a reboot lock and a rate limit.

Proven from the fleet server's own records, as an operator would read them: its
log of reboot-lock grants and releases (`/admin/locks/<group>`) shows the reboots
never overlapped, and its log of the updates it let start (`/admin/updates/<group>`)
shows the rate was kept; the hosts' reports show each one's update was whole.
The hosts boot one after another, each with two virtual CPUs: under TCG on this
2-core machine three guests booting side by side with one vCPU each took 315 s to
be ready against ~90 s for one at a time, and a reboot with the other two idle
took ~4 min on one vCPU; only one host reboots at a time, so it gets both cores.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from qemu.lab import V1, V2, Lab, lab_group
from updater.fleet.locks import LockEventKind, most_held
from updater.fleet.policy import most_in_flight, most_started_in_any_period

pytestmark = [pytest.mark.slow, pytest.mark.qemu]
GROUP = "fleet"
MAX_UPDATES, PERIOD_S = 2, 60


def test_three_hosts_reboot_one_at_a_time_within_the_rate(
    tmp_path: Path, release: Callable[[str], Path], narrate: Callable[[str], None]
) -> None:
    policy = lab_group(max_concurrent_reboots=1, rate={"max_updates": MAX_UPDATES, "period": f"{PERIOD_S}s"})
    with Lab(tmp_path, narrate) as lab:
        lab.publish(release(V1))
        with lab.serve({GROUP: policy}):
            hosts = []
            for name in ("host1", "host2", "host3"):
                hosts.append(lab.boot(name, release(V1), group=GROUP))
                assert hosts[-1].wait_ready(1200).version == V1
            lab.publish(release(V2))
            reports = {host.name: lab.follow(host, V2, ("blessed", "rolled_back", "failed"), 3600)
                       for host in hosts}
            assert lab.locks_given_back(GROUP) == []
            locks = lab.admin(f"/admin/locks/{GROUP}")
            updates = lab.admin(f"/admin/updates/{GROUP}")
            fleet = lab.admin("/admin/status")["groups"][GROUP]
            transfers = [lab.admin(f"/admin/hosts/{host.node_id}")["transfers"][-1] for host in hosts]

    for name, events in reports.items():
        assert [r["event"] for r in events] == ["downloading", "staged", "rebooting", "blessed"], name
    nodes = {host.node_id for host in hosts}

    # Every host rebooted under a lock it was granted and gave back, one at a time.
    lock_events = [(e["at"], e["node_id"], LockEventKind(e["event"])) for e in locks["events"]]
    assert {node for _, node, kind in lock_events if kind is LockEventKind.GRANTED} == nodes
    assert {node for _, node, kind in lock_events if kind is LockEventKind.RELEASED} == nodes
    assert most_held(lock_events).count == 1
    for name, events in reports.items():
        node = next(h.node_id for h in hosts if h.name == name)
        granted = min(at for at, n, kind in lock_events if n == node and kind is LockEventKind.GRANTED)
        released = max(at for at, n, kind in lock_events if n == node and kind is LockEventKind.RELEASED)
        at = {r["event"]: r["at"] for r in events}
        assert granted <= at["rebooting"] and at["blessed"] <= released, name

    # The server let no more updates start per period, or run at once, than the rate allows.
    started = [u for u in updates["updates"] if u["version"] == V2]
    assert {u["node_id"] for u in started} == nodes and len(started) == 3
    assert all(u["outcome"] == "blessed" for u in started)
    assert most_started_in_any_period([u["started_at"] for u in started], PERIOD_S) <= MAX_UPDATES
    assert most_in_flight((u["started_at"], u["finished_at"]) for u in started) <= MAX_UPDATES

    assert fleet["hosts_by_version"] == {V2: 3}
    # Each host built v2 from its booted slot (the lab publishes block indexes, as `berth publish` does).
    assert [(t["version"], t["path"]) for t in transfers] == [(V2, "delta")] * 3, transfers
    assert fleet["locks_held"] == []
