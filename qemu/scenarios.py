"""The end-to-end scenarios as steps on a Lab: publish a release, let the fleet take a
host through it, and say what happened and how long it took.

Tests assert on the outcomes, `make demo` narrates them, bench/e2e.py times them.
Times come from the fleet server's records (its clock is this machine's) and
from what the harness sees on the console and over SSH.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from qemu.lab import Host, Lab
from qemu.ready import Ready
from updater import contract

# Upper bounds under TCG on a shared 2-core machine (a boot took 60-150 s there).
UPDATE_TIMEOUT_S = 1800
FALLBACK_BOOTS_TIMEOUT_S = 1800


def manifest(artifact: Path) -> contract.Manifest:
    return contract.Manifest.from_json((artifact / contract.MANIFEST).read_text())


@dataclass(frozen=True)
class Update:
    version: str
    ready: Ready  # the new version's first blessed boot
    events: list[str]  # what the server recorded for this version, in order
    publish_to_blessed_s: float
    downtime_s: float | None  # from the reboot report to the app running again (None: no app)


@dataclass(frozen=True)
class Fallback:
    version: str
    ready: Ready  # the boot that came back: the previous version
    events: list[str]
    failed_boots: int  # boots of the bad version the console shows
    fallback_s: float  # from the reboot report to the previous version blessed again
    detail: str  # the agent's rollback report
    reported_at: float  # when the server recorded it (time.time(), this machine's clock)


def update(lab: Lab, host: Host, artifact: Path, *, with_app: bool = False, delta: bool = True) -> Update:
    """Publish ``artifact`` (``delta``: with block indexes, else only the full download); the
    host takes it, reboots into it and is blessed."""
    version = manifest(artifact).version
    published = time.time()
    lab.publish(artifact, delta=delta)
    rebooting = lab.follow(host, version, ("rebooting", "failed"), UPDATE_TIMEOUT_S)[-1]
    if rebooting["event"] == "failed":
        raise RuntimeError(f"{host.name}: update to {version} failed: {rebooting['detail']}")
    ready = host.wait_ready(UPDATE_TIMEOUT_S)
    reports = lab.follow(host, version, ("blessed", "rolled_back"), 300)
    downtime = None
    if with_app:
        while not host.app_running():
            time.sleep(1)
        downtime = time.time() - rebooting["at"]
        host.narrate(f"{host.name}: container running again {downtime:.0f} s after the reboot began")
    return Update(version, ready, [r["event"] for r in reports], reports[-1]["at"] - published, downtime)


def fallback(lab: Lab, host: Host, artifact: Path) -> Fallback:
    """Publish a release built to fail; the host tries it until systemd-boot falls back."""
    built = manifest(artifact)
    version = built.version
    lab.publish(artifact)
    rebooting = lab.follow(host, version, ("rebooting", "failed"), UPDATE_TIMEOUT_S)[-1]
    if rebooting["event"] == "failed":
        raise RuntimeError(f"{host.name}: update to {version} failed before the reboot: {rebooting['detail']}")
    host.narrate(f"{host.name}: booting {version}, which fails on purpose; systemd-boot counts its tries")
    ready = host.wait_ready(FALLBACK_BOOTS_TIMEOUT_S)
    back = time.time()
    reports = lab.follow(host, version, ("rolled_back", "blessed"), 300)
    boots = host.boots_of(built.roothash)
    host.narrate(f"{host.name}: {version} booted {boots} times, then {ready.version} came back by itself")
    return Fallback(version, ready, [r["event"] for r in reports], boots, back - rebooting["at"],
                    reports[-1]["detail"], reports[-1]["at"])


@dataclass(frozen=True)
class Journey:
    """Scenarios 1, 5 and 2 on one fresh host, as `make demo` and bench/e2e.py run them."""

    host: Host
    first_boot: Ready
    update: Update
    slots_after_update: dict[str, str | None]
    fallback: Fallback
    halted: str | None  # why the fleet server halted the bad release for the group


def update_then_fall_back(lab: Lab, group: str, v1: Path, v2: Path, bad: Path, app: Path) -> Journey:
    """Boot ``v1`` with a container, update it to ``v2``, then roll out ``bad`` and fall back."""
    lab.publish(v1)
    host = lab.boot("host1", v1, group=group)
    first = host.wait_ready()
    host.start_app(app)
    done = update(lab, host, v2, with_app=True)
    slots = {name: slot["version"] for name, slot in host.agent_status()["slots"].items()}
    host.narrate(f"{host.name}: slot A holds {slots['a']}, slot B {slots['b']}")
    back = fallback(lab, host, bad)
    rollouts = lab.admin("/admin/status")["groups"][group]["rollouts"]
    halted = next((r["halted_reason"] for r in rollouts if r["version"] == back.version), None)
    host.narrate(f"fleet server: rollout of {back.version} in group {group} halted: {halted}")
    return Journey(host, first, done, slots, back, halted)
