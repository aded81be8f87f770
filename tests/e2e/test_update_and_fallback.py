"""Scenarios 3, 1, 5 and 2 on one host, in order: v1 -> v2 through power cuts, v2 -> v3
with a container kept running across the update, then two releases built to fail,
each falling back to v3 and saying why.

One VM and one fleet server serve the whole module (boots are the expensive part
under TCG: the host boots once on v1, and every later boot is one a scenario needs);
each test starts from where the previous one left the host, so a failure early on
makes the later ones fail too.

Scenario 3: power cuts (QMP system_reset) in the middle of the update v1 -> v2. The
agent streams the download straight into the inactive slot, so a cut a third of the
way or more through the stream hits the download and the slot write at once, past
the agent's first checkpoints (cuts at every byte offset of the write are the disk-image
tests' job, tests/agent/test_powercut.py); a cut after the UKI is staged (the fleet's
only reboot slot held by an operator keeps the agent from rebooting by itself) makes
the next boot v2's first, and that boot hangs before it is blessed (PID 1 starved on
every CPU by a site health check, qemu/hang.py): the watchdog the image arms from the
initrd on resets it, which spends its try: systemd-boot falls back to v1, the agent
finds no failed check and no panic, so the fallback is unexplained and v2 is tried
again, not condemned. Every time a good slot must boot,
the update must complete, and /var must keep what was written on it.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from qemu import hang, scenarios
from qemu.lab import AGENT_POLL_S, BAD_CHECK, BAD_PANIC, V1, V2, V3, Host, Lab, lab_group

pytestmark = [pytest.mark.slow, pytest.mark.qemu]
GROUP = "lab"
# The bless-timeout backstop; a failing health check must reboot long before it.
BLESS_TIMEOUT_S = 900
# Fewer than the agent's default 3: each try of a bad release is a whole TCG boot
# (the count itself is systemd-boot's; berth names the entry +N, tested on disk images).
BOOT_TRIES = 1
# The hung boot's reset: PID 1 last pinged at most the image's RuntimeWatchdogSec (2 min)
# before the hang; slack for a loaded machine's console.
WATCHDOG_RESET_S = 300
# What the agent's report says of each release built to fail (its rollback's cause).
CAUSES = {BAD_CHECK: "health check failed: berth-check-user.service", BAD_PANIC: "the kernel panicked"}


@pytest.fixture(scope="module")
def lab(
    tmp_path_factory: pytest.TempPathFactory, release: Callable[[str], Path], narrate: Callable[[str], None]
) -> Iterator[Lab]:
    with Lab(tmp_path_factory.mktemp("lab-update"), narrate) as lab:
        lab.publish(release(V1))
        with lab.serve({GROUP: lab_group()}):
            yield lab


@pytest.fixture(scope="module")
def host(lab: Lab, release: Callable[[str], Path]) -> Host:
    host = lab.boot("host", release(V1), group=GROUP, bless_timeout_s=BLESS_TIMEOUT_S, boot_tries=BOOT_TRIES)
    ready = host.wait_ready()
    assert (ready.version, ready.slot) == (V1, "a")
    return host


def events(lab: Lab, host: Host, version: str) -> list[str]:
    return [r["event"] for r in lab.reports(host) if r["version"] == version]


def wait_for_activity(host: Host, pattern: str, timeout: float = 1200) -> str:
    """Poll the agent's STATUS= over SSH until it matches ``pattern``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        activity = host.agent_activity()
        if re.search(pattern, activity):
            return activity
        time.sleep(2)
    raise TimeoutError(f"{host.name}: agent never reported /{pattern}/; last: {activity!r}")


def test_power_cuts_and_a_hang_during_the_update_to_v2_never_condemn_it_and_v1_stays_the_fallback(
    lab: Lab, host: Host, release: Callable[[str], Path], narrate: Callable[[str], None]
) -> None:
    machine_id = host.run("cat /etc/machine-id").stdout.strip()
    assert machine_id == host.node_id  # derived from the VM's SMBIOS UUID, not stored on /var
    token = secrets.token_hex(8)
    host.run(f"mkdir -p /var/lib/cut-test && echo {token} > /var/lib/cut-test/token && sync")
    lab.reboot_lock(GROUP, "operator", take=True)  # the agent may stage, but not reboot
    lab.publish(release(V2), delta=False)  # the cut must hit the full stream mid-way

    v1 = scenarios.manifest(release(V1)).roothash
    wait_for_activity(host, r"writing (root|verity) .*: [3-9][0-9]%")
    host.power_cut("download and slot B part written")
    ready = host.wait_ready()  # the agent resumes from its last checkpoint meanwhile
    assert (ready.version, ready.slot) == (V1, "a")
    assert host.boots_of(v1) == 2  # the cut host came back on v1

    lab.follow(host, V2, ("staged",))
    v2 = scenarios.manifest(release(V2)).roothash
    host.hang_on_first_boot_of(v2)
    host.power_cut("UKI just staged")
    # v2's first try hangs before it is blessed (PID 1 starved): nothing in the guest
    # reboots it, only the watchdog armed from the initrd on; the reset spends the try.
    host.vm.wait_for(rf"Command line: .*roothash={v2}")
    host.vm.wait_for(re.escape(hang.MARKER))
    hung = time.monotonic()
    host.vm.wait_for(r"Command line: ", WATCHDOG_RESET_S)
    narrate(f"{host.name}: the watchdog reset the hung boot {time.monotonic() - hung:.0f} s after the hang")
    for boot in range(2, BOOT_TRIES + 1):  # further tries, if any, are cut
        host.vm.wait_for(rf"roothash={v2}")
        host.vm.wait_for(r"Welcome to Debian")
        host.power_cut(f"boot {boot} of {V2}")
    # Every try spent: systemd-boot falls back to v1; nothing explains it, so the
    # agent stages v2 again (it waits for the operator's lock to reboot into it).
    ready = host.wait_ready()
    assert (ready.version, ready.slot) == (V1, "a")
    assert host.boots_of(v1) == 3
    # The card says it reset the machine (WDIOF_CARDRESET): a watchdog, not a power cut.
    assert host.run("cat /sys/class/watchdog/watchdog0/bootstatus").stdout.strip() == "32"
    again = lab.follow(host, V2, ("rebooting",), 300)[-1]
    assert "no failed check or panic recorded" in again["detail"] and "trying again (1 of" in again["detail"]
    assert host.agent_status()["bad_versions"] == []
    lab.reboot_lock(GROUP, "operator", take=False)
    ready = host.wait_ready(scenarios.UPDATE_TIMEOUT_S)
    reports = lab.follow(host, V2, ("blessed", "rolled_back"), 300)

    assert (ready.version, ready.slot) == (V2, "b")
    assert ready.roothash == v2
    # The hung boot's agent (v2 booted by the cut, not by it) said so before the hang.
    assert [r["event"] for r in reports] == ["downloading", "staged", "rebooting", "rebooting", "rebooting",
                                             "blessed"]
    assert host.boots_of(v2) == BOOT_TRIES + 1  # the hung boot, then the try again was blessed
    assert host.run("cat /var/lib/cut-test/token").stdout.strip() == token
    status = host.agent_status()
    assert status["booted"] == {"version": V2, "slot": "b", "roothash": v2}
    assert status["slots"]["a"]["version"] == V1  # the fallback is still there
    assert [(e["version"], e["tries_left"]) for e in status["entries"]] == [(V2, None), (V1, None)]
    assert status["state"] == "idle"
    assert status["bad_versions"] == [] and status["unexplained_versions"] == []
    assert lab.locks_given_back(GROUP) == []  # given back once blessed (or rolled back)
    fleet = lab.admin("/admin/status")["groups"][GROUP]
    assert fleet["hosts_by_version"] == {V2: 1}
    (rollout,) = [r for r in fleet["rollouts"] if r["version"] == V2]
    assert rollout["halted_reason"] is None  # power cuts do not count against a release
    assert host.run("cat /etc/machine-id").stdout.strip() == machine_id


def test_update_to_v3_through_the_fleet_keeps_the_container_with_its_data_and_replaces_v1(
    lab: Lab, host: Host, release: Callable[[str], Path], app_archive: Path
) -> None:
    host.start_app(app_archive)
    assert host.app_starts() == 1
    machine_id = host.run("cat /etc/machine-id").stdout.strip()
    done = scenarios.update(lab, host, release(V3), with_app=True, delta=True)

    assert (done.ready.version, done.ready.slot) == (V3, "a")
    assert done.ready.roothash == scenarios.manifest(release(V3)).roothash
    assert done.events == ["downloading", "staged", "rebooting", "blessed"]
    # By delta: the new slot was built from the booted v2 slot and ranges of v3's blobs
    # (the server's record of the staged report's transfer).
    transfer = lab.admin(f"/admin/hosts/{host.node_id}")["transfers"][-1]
    assert (transfer["version"], transfer["path"]) == (V3, "delta")
    assert transfer["bytes_fetched"] < 0.35 * transfer["bytes_full"], transfer
    status = host.agent_status()
    assert status["booted"] == {"version": V3, "slot": "a", "roothash": done.ready.roothash}
    assert {name: slot["version"] for name, slot in status["slots"].items()} == {"a": V3, "b": V2}
    assert [(e["version"], e["tries_left"]) for e in status["entries"]] == [(V3, None), (V2, None)]
    assert status["state"] == "idle"
    assert lab.locks_given_back(GROUP) == []  # given back once blessed (or rolled back)
    fleet = lab.admin("/admin/status")["groups"][GROUP]
    assert fleet["hosts_by_version"] == {V3: 1}
    # Scenario 5: the engine restarted the container on v3, with the data it wrote on v2.
    assert host.app_running()
    assert host.app_starts() == 2
    assert host.run("cat /etc/machine-id").stdout.strip() == machine_id


@pytest.mark.parametrize("bad", [BAD_CHECK, BAD_PANIC], ids=["health-check-fails", "kernel-panics"])
def test_a_release_built_to_fail_falls_back_by_itself_says_why_and_halts(
    lab: Lab, host: Host, release: Callable[[str], Path], bad: str
) -> None:
    before = host.agent_status()["booted"]
    back = scenarios.fallback(lab, host, release(bad))

    assert (back.ready.version, back.ready.slot) == (before["version"], before["slot"])
    # systemd-boot counted every try of the bad version down, then fell back.
    assert back.failed_boots == BOOT_TRIES
    assert back.events == ["downloading", "staged", "rebooting", "rolled_back"]
    assert before["version"] in back.detail
    assert CAUSES[bad] in back.detail  # the cause, told apart from an unexplained fallback
    status = host.agent_status()
    assert bad in status["bad_versions"]  # an explained failure condemns the version
    # The bad release overwrote the other slot; its entry is gone, so only the good one boots.
    assert [e["version"] for e in status["entries"]] == [before["version"]]
    assert status["slots"]["b" if before["slot"] == "a" else "a"]["version"] == bad
    assert lab.locks_given_back(GROUP) == []  # given back once blessed (or rolled back)
    fleet = lab.admin("/admin/status")["groups"][GROUP]
    (rollout,) = [r for r in fleet["rollouts"] if r["version"] == bad]
    assert rollout["halted_reason"]
    # Never taken again: more than two of the agent's polls after its rollback report nothing
    # new was started (the checks above took part of that time already).
    time.sleep(max(0.0, back.reported_at + 2.5 * AGENT_POLL_S - time.time()))
    assert events(lab, host, bad) == back.events
    assert host.agent_status()["state"] == "idle"
