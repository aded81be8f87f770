"""Scenario 3: power cuts (QMP system_reset) in the middle of an update, v1 -> v2.

The agent streams the download straight into the inactive slot, so a cut early in
the stream hits the download and one half-way through hits the slot write; a cut
after the UKI is staged (the fleet's only reboot slot held by an operator keeps
the agent from rebooting by itself) makes the next boot the new version's first,
and a cut during that boot spends one of its tries. Every time a good slot must
boot, the update must complete, and /var must keep what was written on it.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from qemu import scenarios
from qemu.lab import V1, V2, Host, Lab, lab_group

pytestmark = [
    pytest.mark.slow,
    pytest.mark.qemu,
]
GROUP = "cuts"


def wait_for_activity(host: Host, pattern: str, timeout: float = 1200) -> str:
    """Poll the agent's STATUS= over SSH until it matches ``pattern``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        activity = host.agent_activity()
        if re.search(pattern, activity):
            return activity
        time.sleep(2)
    raise TimeoutError(f"{host.name}: agent never reported /{pattern}/; last: {activity!r}")


@pytest.fixture(scope="module")
def lab(
    tmp_path_factory: pytest.TempPathFactory, release: Callable[[str], Path], narrate: Callable[[str], None]
) -> Iterator[Lab]:
    with Lab(tmp_path_factory.mktemp("lab-cuts"), narrate) as lab:
        lab.publish(release(V1))
        with lab.serve({GROUP: lab_group()}):
            yield lab


def test_power_cuts_during_download_slot_write_after_staging_and_first_boot(
    lab: Lab, release: Callable[[str], Path]
) -> None:
    host = lab.boot("host", release(V1), group=GROUP)
    assert host.wait_ready().version == V1
    token = secrets.token_hex(8)
    host.run(f"mkdir -p /var/lib/cut-test && echo {token} > /var/lib/cut-test/token && sync")
    lab.reboot_lock(GROUP, "operator", take=True)  # the agent may stage, but not reboot
    lab.publish(release(V2))

    v1 = scenarios.manifest(release(V1)).roothash
    wait_for_activity(host, r"writing root .*: [0-9]%")  # single digits: just begun
    host.power_cut("download just begun")
    # The agent resumes from its last checkpoint as soon as it starts again, long
    # before the boot is blessed, so follow its progress rather than the console.
    wait_for_activity(host, r"writing (root|verity) .*: [3-9][0-9]%")
    assert host.boots_of(v1) == 2  # the cut host came back on v1
    host.power_cut("slot B part written")
    ready = host.wait_ready()
    assert (ready.version, ready.slot) == (V1, "a")

    lab.follow(host, V2, ("staged",))
    host.power_cut("UKI just staged")
    v2 = scenarios.manifest(release(V2)).roothash
    host.vm.wait_for(rf"Command line: roothash={v2}")
    host.vm.wait_for(r"Welcome to Debian")
    host.power_cut(f"first boot of {V2}")
    ready = host.wait_ready()
    reports = lab.follow(host, V2, ("blessed", "rolled_back"), 300)
    lab.reboot_lock(GROUP, "operator", take=False)

    assert (ready.version, ready.slot) == (V2, "b")
    assert [r["event"] for r in reports] == ["downloading", "staged", "rebooting", "blessed"]
    assert host.boots_of(v2) == 2  # the cut first boot spent one try, the second was blessed
    assert host.run("cat /var/lib/cut-test/token").stdout.strip() == token
    status = host.agent_status()
    assert status["slots"]["a"]["version"] == V1 and status["state"] == "idle"
