"""The agent's shell in this process: a host on files (conftest.py: a GPT disk image,
an ESP directory, systemd-boot's model), with the signed repository and the fleet in
memory instead of TUF over HTTP and `berth serve`.

These pin what the agent does at its boundaries, in order: the reports it sends,
when it takes and gives back the reboot lock, when it reboots, and that each tick
acts on facts gathered afresh. The same paths run end to end, through the CLI and
real TUF metadata, in test_update.py, test_rollback_cause.py and test_bad_input.py.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
import zstandard

from updater import contract
from updater.agent.agent import Agent, Facts
from updater.agent.boundaries import Offer
from updater.agent.host import HostPaths
from updater.agent.policy import Window
from updater.agent.settings import load_settings
from updater.release import ArtifactRole, Release, ReleaseArtifact, target_path
from updater.version import Version
from updater.wire import Report, RollbackCause

Host = Server = Any  # fixtures from conftest.py
FILES = {ArtifactRole.ROOT: contract.ROOT_IMAGE, ArtifactRole.VERITY: contract.VERITY_IMAGE,
         ArtifactRole.UKI: contract.UKI}


@dataclass(frozen=True)
class MemoryTarget:
    path: str
    length: int
    hashes: dict[str, str]


class MemoryRepository:
    """A stand-in for the verified TUF repository: releases and their target bytes in
    memory (the slot images zstd-compressed in 1 MiB frames, as `berth publish` sends them)."""

    def __init__(self) -> None:
        self.releases: list[Release] = []
        self.blobs: dict[str, bytes] = {}
        self.streamed: list[tuple[str, int]] = []

    def add(self, built: Any, withdrawn: bool = False) -> None:
        manifest = json.loads((built.directory / contract.MANIFEST).read_text())
        artifacts = {}
        for role, name in FILES.items():
            data = (built.directory / name).read_bytes()
            wire = data if role is ArtifactRole.UKI else b"".join(
                zstandard.ZstdCompressor().compress(data[i:i + (1 << 20)]) for i in range(0, len(data), 1 << 20))
            path = target_path("berth", built.version, role)
            self.blobs[path] = wire
            artifacts[role] = ReleaseArtifact(
                role, path, len(wire), hashlib.sha256(wire).hexdigest(),
                "none" if role is ArtifactRole.UKI else "zstd", len(data), hashlib.sha256(data).hexdigest())
        self.releases = [r for r in self.releases if r.version != built.version]
        self.releases.append(Release("berth", built.version, built.roothash, manifest["slot_size"],
                                     manifest["verity_slot_size"], None, withdrawn, artifacts))

    def refresh(self) -> list[Release]:
        return list(self.releases)

    def target(self, path: str) -> MemoryTarget:
        data = self.blobs[path]
        return MemoryTarget(path, len(data), {"sha256": hashlib.sha256(data).hexdigest()})

    def optional_target(self, path: str) -> MemoryTarget | None:
        return None  # no block indexes: every update takes the full path (test_delta.py has them)

    def read_target(self, info: MemoryTarget) -> bytes:
        return self.blobs[info.path]

    def read_range(self, path: str, sha256: str, start: int, end: int) -> bytes | None:
        raise AssertionError("no block index was offered")

    def stream(self, info: MemoryTarget, offset: int) -> Iterator[bytes]:
        self.streamed.append((info.path, offset))
        data = self.blobs[info.path]
        for start in range(offset, len(data), 256 << 10):
            yield data[start:start + (256 << 10)]


@dataclass
class RecordingFleet:
    """A fleet that allows every update and records what the agent tells it, in order."""

    window: Window | None = None
    lock_free: bool = True
    calls: list[str] = field(default_factory=list)
    reports: list[Report] = field(default_factory=list)

    def offer(self, current: Version, bad: tuple[Version, ...], image_id: str) -> Offer:
        self.calls.append(f"offer {current} refusing {','.join(map(str, bad))}")
        return Offer(True, None, "newest")

    def report(self, report: Report) -> None:
        self.calls.append(f"report {report.event.value}")
        self.reports.append(report)

    def take_reboot_lock(self) -> bool:
        self.calls.append("take lock" if self.lock_free else "lock refused")
        return self.lock_free

    def release_reboot_lock(self) -> bool:
        self.calls.append("release lock")
        return True

    def reboot_window(self) -> Window | None:
        return self.window


@dataclass
class Shell:
    host: Host
    agent: Agent
    fleet: RecordingFleet
    repo: MemoryRepository
    ticks: list[str]

    def step(self) -> float:
        self.ticks.clear()
        return self.agent.step()

    def events(self) -> list[str]:
        return [c for c in self.fleet.calls if not c.startswith("offer")]


@pytest.fixture
def shell(host_of: Any, server: Server, releases: dict[str, Any]) -> Shell:
    repo_dir = server.root / "unused"
    (repo_dir / "metadata").mkdir(parents=True)
    (repo_dir / "metadata/root.json").write_text("{}")  # the TUF root the memory repository needs not
    host = host_of(repo_dir)
    repo = MemoryRepository()
    repo.add(releases["1.1"])
    fleet = RecordingFleet()
    settings = load_settings(host.root / "etc/berth/agent.yaml", None)
    agent = Agent(settings, HostPaths.under(host.root), "node-1", fleet, open_repository=lambda: repo)
    ticks: list[str] = []
    gather = agent.facts

    def counted() -> Facts:
        ticks.append(agent.store.load().phase.name.value)
        return gather()

    agent.facts = counted  # type: ignore[method-assign]
    return Shell(host, agent, fleet, repo, ticks)


def test_one_step_takes_an_update_to_its_reboot_one_transition_per_tick(shell: Shell) -> None:
    assert shell.step() == 1
    # Each phase's handler ran on facts gathered for it, not on the first tick's.
    assert shell.ticks == ["idle", "writing", "written", "staged"]
    assert shell.events() == ["report downloading", "report staged", "take lock", "report rebooting"]
    assert [r.seq for r in shell.fleet.reports] == [1, 2, 3]
    assert {(r.node_id, r.group, r.version, r.from_version) for r in shell.fleet.reports} \
        == {("node-1", "default", "1.1", "1.0")}
    assert shell.host.rebooted() == 1 and shell.host.state()["state"] == "rebooting"
    assert shell.host.entries() == ["berth_1.1+3.efi", "berth_1.0.efi"]
    assert shell.host.verified_boot() == "1.1"
    # Each target streamed once from its start; the check before the reboot found the UKI whole.
    assert sorted(shell.repo.streamed) == sorted((target_path("berth", "1.1", r), 0) for r in FILES)

    assert shell.host.boot() == "1.1"
    assert shell.step() == 1  # min(poll, 10): the boot is on trial
    assert shell.ticks == ["rebooting"] and shell.host.state()["unblessed_since"] is not None
    shell.host.bless()
    assert shell.step() == 1
    assert shell.events()[4:] == ["report blessed", "release lock"]
    state = shell.host.state()
    assert (state["state"], state["lock_held"], state["seq"]) == ("idle", False, 4)
    assert shell.host.entries() == ["berth_1.1.efi", "berth_1.0.efi"]
    assert shell.host.rebooted() == 1


def test_an_unexplained_fallback_reports_twice_and_stages_again_in_one_step(shell: Shell) -> None:
    shell.step()
    for _ in range(3):
        assert shell.host.boot() == "1.1"  # cut short each time, nothing recorded
    assert shell.host.boot() == "1.0"
    shell.fleet.calls.clear()
    shell.step()
    assert shell.ticks == ["rebooting", "staged"]
    assert shell.events() == ["report rebooting", "take lock", "report rebooting"]
    first, second = shell.fleet.reports[-2:]
    assert first.cause is RollbackCause.UNEXPLAINED and "trying again (1 of 2)" in first.detail
    assert second.cause is None and second.detail == ""
    assert shell.host.rebooted() == 2 and shell.host.entries() == ["berth_1.1+3.efi", "berth_1.0.efi"]
    assert (shell.host.state()["state"], shell.host.state()["fallbacks"]) == ("rebooting", 1)


def _update_failing_its_checks(shell: Shell) -> None:
    """Stage and reboot into 1.1, fail its health check on every try, fall back to 1.0,
    and step once more on the old version (the calls before that forgotten)."""
    shell.step()
    for _ in range(3):
        assert shell.host.boot() == "1.1"
        shell.host.fail_check()
    assert shell.host.boot() == "1.0"
    shell.fleet.calls.clear()
    shell.step()


def test_a_failed_check_rolls_back_for_good_and_gives_the_lock_back(shell: Shell) -> None:
    _update_failing_its_checks(shell)
    assert shell.ticks == ["rebooting"]
    assert shell.events() == ["report rolled_back", "release lock"]
    assert shell.fleet.reports[-1].cause is RollbackCause.HEALTH_CHECK
    state = shell.host.state()
    assert (state["state"], state["bad_versions"], state["lock_held"]) == ("idle", ["1.1"], False)
    assert shell.host.entries() == ["berth_1.0.efi"]
    shell.fleet.calls.clear()
    shell.step()  # 1.1 is refused from now on: told to the fleet, and not taken
    assert shell.fleet.calls == ["offer 1.0 refusing 1.1"] and shell.ticks == ["idle"]


def test_outside_the_strategys_window_a_staged_update_waits_without_the_lock(shell: Shell) -> None:
    shell.fleet.window = Window.parse("02:00-03:00")
    shell.agent.clock = lambda: datetime(2026, 1, 1, 12, 0, tzinfo=UTC).timestamp()
    assert shell.step() == 1  # min(poll, 60)
    assert shell.events() == ["report downloading", "report staged"]
    assert shell.host.state()["state"] == "staged" and shell.host.rebooted() == 0
    shell.agent.clock = lambda: datetime(2026, 1, 2, 2, 30, tzinfo=UTC).timestamp()
    shell.step()
    assert shell.ticks == ["staged"]
    assert shell.events()[2:] == ["take lock", "report rebooting"] and shell.host.rebooted() == 1


def test_a_busy_lock_keeps_the_update_staged_and_retries_later(shell: Shell) -> None:
    shell.fleet.lock_free = False
    assert shell.step() == shell.agent.settings.lock_retry_s
    assert shell.events() == ["report downloading", "report staged", "lock refused"]
    assert shell.host.state()["state"] == "staged" and shell.host.rebooted() == 0


def test_a_release_withdrawn_while_staged_is_abandoned_before_the_reboot(shell: Shell, releases: Any) -> None:
    shell.fleet.lock_free = False
    shell.step()
    shell.repo.add(releases["1.1"], withdrawn=True)
    shell.fleet.lock_free = True
    shell.step()
    assert shell.events()[3:] == ["take lock", "release lock", "report failed"]
    assert "no longer offered" in shell.fleet.reports[-1].detail
    assert shell.host.state()["state"] == "idle" and shell.host.rebooted() == 0
    assert shell.host.entries() == ["berth_1.0.efi"]  # slot b emptied, its entry gone


def test_the_previous_releases_state_file_is_followed_after_the_reboot(shell: Shell, releases: Any) -> None:
    """A host updated by the previous release's agent boots the new one, which finds the
    old agent's state.json (every key written, null where unused) and finishes the update."""
    shell.step()  # the update, to get the disk and ESP as a reboot leaves them
    assert shell.host.boot() == "1.1"
    shell.host.bless()
    target = {"image_id": "berth", "version": "1.1", "roothash": releases["1.1"].roothash, "slot": "b",
              "from_version": "1.0"}
    (shell.host.state_dir / "state.json").write_text(json.dumps({
        "state": "rebooting", "seq": 3, "bad_versions": [], "unexplained_versions": [], "target": target,
        "progress": {}, "lock_held": True, "unblessed_since": None, "staged_at": 1.0, "fallbacks": 0,
    }, indent=1))
    shell.fleet.calls.clear()
    shell.step()
    assert shell.events() == ["report blessed", "release lock"] and shell.fleet.reports[-1].seq == 4
    assert set(shell.host.state()) == {"state", "seq", "bad_versions", "unexplained_versions", "lock_held"}



# ---- reboot hooks (updater/agent/hooks.py) ---------------------------------------------


def _hook(shell: Shell, stage: str, name: str, body: str) -> None:
    """A real executable in the host's hook directory; it appends its stage and name to
    the host's hook log, then runs ``body``."""
    folder = shell.host.state_dir / "hooks" / stage
    folder.mkdir(parents=True, exist_ok=True)
    log = shell.host.state_dir / "hook.log"
    path = folder / name
    path.write_text(f'#!/bin/sh\necho "{stage}/{name} $BERTH_TARGET_VERSION" >> {log}\n{body}\n')
    path.chmod(0o755)


def _update_and_bless(shell: Shell) -> None:
    """Stage and reboot into 1.1, bless that boot, and step on it."""
    shell.step()
    assert shell.host.boot() == "1.1"
    shell.host.bless()
    shell.step()


def _hook_log(shell: Shell) -> list[str]:
    log = shell.host.state_dir / "hook.log"
    return log.read_text().splitlines() if log.exists() else []


def test_hooks_run_after_the_lock_before_the_reboot_and_after_the_bless_before_the_release(shell: Shell) -> None:
    _hook(shell, "pre-reboot", "20-second", "true")
    _hook(shell, "pre-reboot", "10-first", "true")
    _hook(shell, "post-bless", "10-active", "true")
    (shell.host.state_dir / "hooks/pre-reboot/.hidden").write_text("#!/bin/sh\nexit 1\n")
    shell.step()
    assert shell.events() == ["report downloading", "report staged", "take lock", "report rebooting"]
    assert _hook_log(shell) == ["pre-reboot/10-first 1.1", "pre-reboot/20-second 1.1"]
    assert shell.host.rebooted() == 1 and shell.host.state()["post_bless_due"] is True
    shell.host.boot()
    shell.step()  # on trial: nothing runs until the bless
    assert len(_hook_log(shell)) == 2
    shell.host.bless()
    shell.step()
    assert shell.events()[4:] == ["report blessed", "release lock"]
    assert _hook_log(shell)[2:] == ["post-bless/10-active 1.1"]
    state = shell.host.state()
    assert (state["state"], state["lock_held"]) == ("idle", False) and "post_bless_due" not in state


def test_a_failing_pre_reboot_hook_defers_the_reboot_and_gives_the_lock_back(shell: Shell) -> None:
    _hook(shell, "pre-reboot", "10-drain", "echo 'service web still here' >&2; exit 3")
    _hook(shell, "pre-reboot", "20-never", "true")
    _hook(shell, "post-bless", "10-active", "true")
    assert shell.step() == shell.agent.settings.poll_interval_s
    # Reported, the host put back in service (post-bless), the lock given back: no reboot.
    assert shell.events() == ["report downloading", "report staged", "take lock", "report staged",
                              "release lock"]
    detail = shell.fleet.reports[-1].detail
    assert detail.startswith("reboot deferred: pre-reboot hook 10-drain exited with status 3")
    assert "service web still here" in detail
    assert _hook_log(shell) == ["pre-reboot/10-drain 1.1", "post-bless/10-active 1.1"]
    state = shell.host.state()
    assert (state["state"], state["lock_held"], shell.host.rebooted()) == ("staged", False, 0)
    assert "post_bless_due" not in state
    # A later step tries again, and reboots once the hook succeeds.
    _hook(shell, "pre-reboot", "10-drain", "true")
    shell.fleet.calls.clear()
    shell.step()
    assert shell.events() == ["take lock", "report rebooting"] and shell.host.rebooted() == 1


def test_a_hook_past_the_budget_is_killed_and_the_reboot_waits(shell: Shell) -> None:
    from dataclasses import replace as dc_replace

    from updater.agent.hooks import HookRunner
    shell.agent.settings = dc_replace(shell.agent.settings, hook_timeout_s=1)
    shell.agent.hooks = HookRunner(shell.host.state_dir, 1)
    _hook(shell, "pre-reboot", "10-slow", "sleep 30")
    shell.step()
    assert shell.events()[-2:] == ["report staged", "release lock"]
    assert "10-slow still running after the 1 s budget (killed)" in shell.fleet.reports[-1].detail
    assert shell.host.rebooted() == 0 and shell.host.state()["state"] == "staged"


def test_a_failing_post_bless_hook_keeps_the_lock_until_it_succeeds(shell: Shell) -> None:
    _hook(shell, "pre-reboot", "10-drain", "true")
    _hook(shell, "post-bless", "10-active", "exit 1")
    _update_and_bless(shell)
    # Blessed and reported, but the host is not back in service: the lock stays held, its
    # lease renewed on every try (so it cannot run out while the hooks keep failing).
    assert shell.events()[4:] == ["report blessed", "take lock"]
    state = shell.host.state()
    assert (state["state"], state["lock_held"], state["post_bless_due"]) == ("idle", True, True)
    assert shell.step() == shell.agent.settings.lock_retry_s
    assert shell.events()[6:] == ["take lock"]
    _hook(shell, "post-bless", "10-active", "true")
    shell.step()
    assert shell.events()[7:] == ["release lock"]
    assert shell.host.state()["lock_held"] is False and "post_bless_due" not in shell.host.state()


def test_a_renewal_refused_while_post_bless_hooks_fail_is_said_and_the_host_still_comes_back(
        shell: Shell, capsys: pytest.CaptureFixture[str]) -> None:
    _hook(shell, "pre-reboot", "10-drain", "true")
    _hook(shell, "post-bless", "10-active", "exit 1")
    _update_and_bless(shell)
    capsys.readouterr()
    shell.fleet.lock_free = False  # the lease ran out meanwhile and another host took the slot
    assert shell.step() == shell.agent.settings.lock_retry_s
    assert shell.events()[-1] == "lock refused"
    assert "error: post-bless hook 10-active exited with status 1; the reboot lock could not be renewed" \
        in capsys.readouterr().err
    assert shell.host.state()["post_bless_due"] is True  # still out: the hooks run again next step
    shell.fleet.lock_free = True
    _hook(shell, "post-bless", "10-active", "true")
    shell.step()
    assert shell.events()[-1] == "release lock" and "post_bless_due" not in shell.host.state()


def test_a_rollback_puts_the_host_back_in_service_before_the_release(shell: Shell) -> None:
    _hook(shell, "pre-reboot", "10-drain", "true")
    _hook(shell, "post-bless", "10-active", "true")
    _update_failing_its_checks(shell)
    assert shell.events() == ["report rolled_back", "release lock"]
    assert _hook_log(shell) == ["pre-reboot/10-drain 1.1", "post-bless/10-active 1.1"]


def test_the_swarm_drain_runs_first_before_the_reboot_and_last_after_the_bless(shell: Shell) -> None:
    from updater.agent.hooks import HookResult, HookRunner
    from updater.agent.swarm import swarm_builtins

    log = shell.host.state_dir / "hook.log"

    class Node:  # the docker CLI cannot run here: test_swarm.py reads its recorded output
        def drain(self, left_s: float) -> HookResult:
            with log.open("a") as out:
                out.write("swarm drain\n")
            return HookResult("builtin:swarm-drain", 0)

        def activate(self, left_s: float) -> HookResult:
            with log.open("a") as out:
                out.write("swarm active\n")
            return HookResult("builtin:swarm-active", 0)

    shell.agent.hooks = HookRunner(shell.host.state_dir, 60, swarm_builtins(True, Node()))  # type: ignore[arg-type]
    _hook(shell, "pre-reboot", "10-mine", "true")
    _hook(shell, "post-bless", "10-mine", "true")
    _update_and_bless(shell)
    assert _hook_log(shell) == ["swarm drain", "pre-reboot/10-mine 1.1", "post-bless/10-mine 1.1", "swarm active"]
    assert shell.events() == ["report downloading", "report staged", "take lock", "report rebooting",
                              "report blessed", "release lock"]


def test_the_swarm_converges_after_an_idle_step_and_never_in_the_middle_of_an_update(
        shell: Shell) -> None:
    from tests.agent.fake_docker import FakeDocker, Network
    from updater.agent.service import render_status, status
    from updater.agent.swarmjoin import SwarmJoiner, Want, read_status

    docker = FakeDocker(Network(), "node-1", "10.77.0.11")
    shell.agent.swarm = SwarmJoiner(Want("node-1", "manager", {"berth.group": "default"}, fleet=False),
                                    shell.host.state_dir, None, run=docker, boot_id=lambda: "b1")
    shell.step()  # an update staged and rebooted into: the step ends mid-update, no converge
    assert docker.calls == []
    assert shell.host.boot() == "1.1"
    shell.host.bless()
    shell.step()  # blessed: idle again, and the node joins
    assert docker.node is not None and docker.node.labels == {"berth.group": "default"}
    joined = read_status(shell.host.state_dir)
    assert joined is not None and joined["state"] == "joined"
    report = status(shell.agent)
    assert report["swarm"] is None  # swarm_role is not set in this host's settings: not shown
    assert "swarm:   manager, joined: manager node-node-1 at 10.77.0.11:2377" in render_status(
        {**report, "swarm": joined})
    docker.daemon_up = False  # a converge that fails never fails the step
    shell.agent.swarm.boot_id = lambda: "b2"
    assert shell.step() == shell.agent.settings.poll_interval_s
