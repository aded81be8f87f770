"""Scenarios 1, 5 and 2 on one host, in order: v1 -> v2 -> v3 with a container kept
running across updates, then two releases built to fail, each falling back to v3.

One VM and one fleet server serve the whole module (boots are the expensive
part under TCG); each test starts from where the previous one left the host,
so a failure early on makes the later ones fail too.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from qemu import scenarios
from qemu.lab import BAD_CHECK, BAD_PANIC, V1, V2, V3, Host, Lab, lab_group

pytestmark = [pytest.mark.slow, pytest.mark.qemu]
GROUP = "lab"
# The bless-timeout backstop; a failing health check must reboot long before it.
BLESS_TIMEOUT_S = 900
# Fewer than the agent's default 3: each try of a bad release is a whole TCG boot.
BOOT_TRIES = 2


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


def test_update_to_v2_through_the_fleet_keeps_v1_as_fallback_and_the_container_with_its_data(
    lab: Lab, host: Host, release: Callable[[str], Path], app_archive: Path
) -> None:
    host.start_app(app_archive)
    assert host.app_starts() == 1
    machine_id = host.run("cat /etc/machine-id").stdout.strip()
    assert machine_id == host.node_id  # derived from the VM's SMBIOS UUID, not stored on /var
    done = scenarios.update(lab, host, release(V2), with_app=True)

    assert (done.ready.version, done.ready.slot) == (V2, "b")
    assert done.ready.roothash == scenarios.manifest(release(V2)).roothash
    assert done.events == ["downloading", "staged", "rebooting", "blessed"]
    status = host.agent_status()
    assert status["booted"] == {"version": V2, "slot": "b", "roothash": done.ready.roothash}
    assert status["slots"]["a"]["version"] == V1  # the fallback is still there
    assert [(e["version"], e["tries_left"]) for e in status["entries"]] == [(V2, None), (V1, None)]
    assert status["state"] == "idle"
    fleet = lab.admin("/admin/status")["groups"][GROUP]
    assert fleet["hosts_by_version"] == {V2: 1}
    assert fleet["locks_held"] == []  # given back once blessed
    # Scenario 5: the engine restarted the container on v2, with the data it wrote on v1.
    assert host.app_running()
    assert host.app_starts() == 2
    assert host.run("cat /etc/machine-id").stdout.strip() == machine_id


def test_v3_goes_into_slot_a_in_place_of_v1(lab: Lab, host: Host, release: Callable[[str], Path]) -> None:
    done = scenarios.update(lab, host, release(V3))

    assert (done.ready.version, done.ready.slot) == (V3, "a")
    assert done.events == ["downloading", "staged", "rebooting", "blessed"]
    status = host.agent_status()
    assert {name: slot["version"] for name, slot in status["slots"].items()} == {"a": V3, "b": V2}
    assert [(e["version"], e["tries_left"]) for e in status["entries"]] == [(V3, None), (V2, None)]
    assert lab.admin("/admin/status")["groups"][GROUP]["hosts_by_version"] == {V3: 1}


@pytest.mark.parametrize("bad", [BAD_CHECK, BAD_PANIC], ids=["health-check-fails", "kernel-panics"])
def test_a_release_built_to_fail_falls_back_by_itself_and_halts(
    lab: Lab, host: Host, release: Callable[[str], Path], bad: str
) -> None:
    before = host.agent_status()["booted"]
    back = scenarios.fallback(lab, host, release(bad))

    assert (back.ready.version, back.ready.slot) == (before["version"], before["slot"])
    # systemd-boot counted every try of the bad version down, then fell back.
    assert back.failed_boots == BOOT_TRIES
    assert back.events == ["downloading", "staged", "rebooting", "rolled_back"]
    assert before["version"] in back.detail
    status = host.agent_status()
    assert bad in status["bad_versions"]
    # The bad release overwrote the other slot; its entry is gone, so only the good one boots.
    assert [e["version"] for e in status["entries"]] == [before["version"]]
    assert status["slots"]["b" if before["slot"] == "a" else "a"]["version"] == bad
    fleet = lab.admin("/admin/status")["groups"][GROUP]
    (rollout,) = [r for r in fleet["rollouts"] if r["version"] == bad]
    assert rollout["halted_reason"]
    assert fleet["locks_held"] == []
    # Never taken again: a few poll intervals later nothing new was started.
    time.sleep(20)
    assert events(lab, host, bad) == back.events
    assert host.agent_status()["state"] == "idle"
