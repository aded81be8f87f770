"""The agent: gathers facts from the edges, asks the pure core, acts, persists.

One ``step()`` moves the persisted state machine as far as it can go now
(idle -> writing -> written -> staged -> rebooting -> idle), one transition per
tick: it gathers the facts, runs the handler of the current phase, which acts
and returns the next state, and goes round again on fresh facts while the
handler says the new phase has work to do now. It returns how long to wait
before the next step. Every action is re-entrant: after a power cut the next
step resumes from whatever state.json says.
"""

from __future__ import annotations

import shlex
import subprocess
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from cli.errors import UserError
from updater.agent import updatestate as u
from updater.agent.boundaries import SignedRepository, UpdateStrategy
from updater.agent.entries import entries_for
from updater.agent.esp import Esp, EspError
from updater.agent.evidence import failed_checks, forget_trial_failures, panics_since
from updater.agent.hooks import HookRunner, Stage, failure
from updater.agent.host import Booted, HostPaths, booted, disk_of_partition, find_esp
from updater.agent.journal import log, notify
from updater.agent.policy import (
    AfterReboot,
    after_reboot,
    boot_blessed,
    choose_release,
    judge_fallback,
    may_write_slot,
    other_slot,
    plan_uki,
    removed_after_bless,
    removed_after_fallback,
    slot_fits,
    still_out_of_service,
    waits_for_window,
)
from updater.agent.settings import AgentSettings, credentials, credentials_dir_from_env
from updater.agent.slots import Slot, find_slots, slot_of_roothash
from updater.agent.statefile import StateStore
from updater.agent.swarm import swarm_builtins
from updater.agent.swarmjoin import SwarmJoiner
from updater.agent.writer import StreamEnded, WriteError, read_back
from updater.contract import EMPTY_LABEL, BootEntry, slot_labels, uki_filename, uuids_from_roothash
from updater.gpt import Partition, read_partitions, relabel
from updater.release import ArtifactRole, Release
from updater.wire import Report, ReportEvent, RollbackCause, Transfer

if TYPE_CHECKING:
    from updater.agent import sbcheck

# A step runs at most this many ticks: the longest path (idle, writing, written,
# staged, then a booted-already rebooting) takes five.
MAX_TICKS = 8

# Failures after which a later step may simply try again (the state is kept).
def retryable_errors() -> tuple[type[Exception], ...]:
    # TUF and requests load only when a step meets an error (or fetches): the
    # agent's start and idle process stay small (see service.py).
    import requests
    from tuf.api import exceptions as tuf_errors

    return (tuf_errors.DownloadError, requests.RequestException, StreamEnded, OSError)


def refused_errors() -> type[Exception]:
    from tuf.api import exceptions as tuf_errors

    return tuf_errors.RepositoryError


SLOT_ROLES = (ArtifactRole.ROOT, ArtifactRole.VERITY)


@dataclass(frozen=True)
class Facts:
    booted: Booted
    disk: str
    slots: dict[str, Slot]
    booted_slot: Slot
    esp: Esp


@dataclass(frozen=True)
class Tick:
    """What one handler did: the state it left, and either the seconds until the next
    step or None, which runs the new phase's handler now, on fresh facts."""

    state: u.AgentState
    wait: float | None = None


class Agent:
    def __init__(
        self,
        settings: AgentSettings,
        paths: HostPaths,
        node_id: str,
        strategy: UpdateStrategy,
        clock: Callable[[], float] = time.time,
        open_repository: Callable[[], SignedRepository] | None = None,
        hooks: HookRunner | None = None,
        swarm: SwarmJoiner | None = None,
    ) -> None:
        self.settings, self.paths, self.node_id, self.strategy, self.clock = settings, paths, node_id, strategy, clock
        self.state_dir = Path(settings.state_dir)
        self.store = StateStore(self.state_dir)
        # The TUF repository of the settings; a test's shell runs on one in memory.
        self.open_repository = open_repository or self._tuf_repository
        self._signed: tuple[SignedRepository, list[Release]] | None = None
        self.hooks = hooks or HookRunner(self.state_dir, settings.hook_timeout_s,
                                         swarm_builtins(settings.swarm_drain))
        # Joins (or starts) the group's swarm after each step (None: swarm_role is empty).
        self.swarm = swarm

    # ---- facts -------------------------------------------------------------------------

    def facts(self) -> Facts:
        now_booted = booted(self.paths)
        disk = self.settings.disk or disk_of_partition(uuids_from_roothash(now_booted.roothash)[0])
        slots = find_slots(read_partitions(disk))
        esp = Esp(Path(self.settings.esp) if self.settings.esp else find_esp())
        return Facts(now_booted, disk, slots, slot_of_roothash(slots, now_booted.roothash), esp)

    def trusted_root(self) -> bytes:
        creds = credentials(credentials_dir_from_env())
        if "tuf_root" in creds:
            return creds["tuf_root"].encode()
        return Path(self.settings.trusted_root).read_bytes()

    def _tuf_repository(self) -> SignedRepository:
        url = self.settings.effective_repo_url
        if not url:
            raise UserError("no repository: set repo_url or server_url")
        from updater.agent.fetch import TufRepository

        return TufRepository(self.state_dir / "tuf", url, self.trusted_root(), self.settings.tls_verify)

    def signed_releases(self) -> tuple[SignedRepository, list[Release]]:
        """The repository refreshed once per step (ngclient verifies each refresh afresh)."""
        if self._signed is None:
            repo = self.open_repository()
            self._signed = (repo, repo.refresh())
        return self._signed

    # ---- steps -------------------------------------------------------------------------

    def step(self) -> float:
        """Advance as far as possible, then converge the swarm membership (after the
        step's check has told the fleet this host's role); the seconds until the next step."""
        wait = self._advance()
        if self.swarm is not None and isinstance(self.store.load().phase, u.Idle):
            try:
                self.swarm.converge()
            except Exception as error:  # noqa: BLE001 - joining never holds up the update path
                log("error", f"swarm: {type(error).__name__}: {error}")
        return wait

    def _advance(self) -> float:
        self._signed = None
        state = self.store.load()
        started = state.phase.name.value
        facts = self.facts()
        for _ in range(MAX_TICKS):
            try:
                tick = self._tick(state, facts)
            except retryable_errors() as error:
                log("error", f"{started}: {error}; will retry", state=started)
                return self.settings.poll_interval_s
            except refused_errors() as error:
                log("error", f"repository metadata refused: {error}", state=started)
                return self.settings.poll_interval_s
            if tick.wait is not None:
                return tick.wait
            if tick.state.phase == state.phase:
                raise RuntimeError(f"{started}: a handler asked to go on without a new phase")
            state = tick.state
            facts = self.facts()
        log("error", f"{started}: still moving after {MAX_TICKS} transitions", state=started)
        return self.settings.poll_interval_s

    def _tick(self, state: u.AgentState, facts: Facts) -> Tick:
        """The current phase's handler: one transition on this tick's facts."""
        match state.phase:
            case u.Idle():
                return self._idle(state, facts)
            case u.Writing() as writing:
                return self._writing(state, writing, facts)
            case u.Written() as written:
                return self._written(state, written, facts)
            case u.Staged() as staged:
                return self._staged(state, staged, facts)
            case u.Rebooting() as rebooting:
                return self._rebooting(state, rebooting, facts)

    def _report(self, state: u.AgentState, event: ReportEvent, target: u.Target, detail: str = "",
                cause: RollbackCause | None = None, transfer: Transfer | None = None) -> u.AgentState:
        state = self.store.save(u.next_seq(state))
        report = Report(self.node_id, self.settings.group, state.seq, event,
                        str(target.version), str(target.from_version), detail, cause=cause, transfer=transfer)
        log("info", f"{event.value} {target.version}" + (f": {detail}" if detail else ""),
            event=event.value, version=target.version, from_version=target.from_version, seq=state.seq,
            **({"cause": cause.value} if cause else {}))
        self.strategy.report(report)
        return state

    def _idle(self, state: u.AgentState, facts: Facts) -> Tick:
        entries = facts.esp.entries()
        current = facts.booted.version
        if not boot_blessed(entries, current):
            notify(STATUS=f"{current} booted, waiting for boot-complete.target")
            return Tick(state, min(self.settings.poll_interval_s, 10))
        if state.post_bless_due:
            back = self._back_in_service(state, None)
            if back is None:
                return Tick(state, self.settings.lock_retry_s)
            state = back
        if state.lock_held and self.strategy.release_reboot_lock():
            state = self.store.save(u.lock_released(state))
        if not self.settings.effective_repo_url:
            # A host provisioned without a repository runs (and stays healthy) until it gets one.
            notify(STATUS=f"{current} booted; no repository: set server_url or repo_url")
            return Tick(state, self.settings.poll_interval_s)
        offer = self.strategy.offer(current, state.refused_versions, facts.booted.image_id)
        poll = offer.poll_after_s or self.settings.poll_interval_s
        if not offer.allowed:
            notify(STATUS=f"up to date at {current}: {offer.reason}")
            log("info", f"no update: {offer.reason}", version=current)
            return Tick(state, poll)
        _, releases = self.signed_releases()
        release, why = choose_release(releases, facts.booted.image_id, current, state.refused_versions,
                                     offer.version)
        if release is None:
            notify(STATUS=f"up to date at {current} ({why})")
            log("info", f"no update: {why}", version=current)
            return Tick(state, poll)
        slot = facts.slots[other_slot(facts.booted_slot.name)]
        refusal = may_write_slot(slot.name, facts.booted_slot.name, True) or slot_fits(release, slot)
        if refusal:
            log("error", f"release {release.version} refused: {refusal}", version=release.version)
            return Tick(state, poll)
        target = u.Target(release.image_id, release.sort_key, release.roothash, slot.name, current)
        state = self.store.save(u.start_writing(state, target))
        return Tick(self._report(state, ReportEvent.DOWNLOADING, target))

    def _invalidate(self, facts: Facts, name: str) -> None:
        """Make slot ``name`` boot nothing before its bytes change: no entry, no matching UUIDs."""
        slot = find_slots(read_partitions(facts.disk))[name]
        if slot.root.label == EMPTY_LABEL and slot.verity.label == EMPTY_LABEL:
            return
        if slot.label_version is not None and slot.label_version != facts.booted.version:
            for entry in entries_for(facts.esp.entries(), slot.label_version):
                facts.esp.remove(entry)
        relabel(facts.disk, {
            slot.root.index: (str(uuid.uuid4()), EMPTY_LABEL),
            slot.verity.index: (str(uuid.uuid4()), EMPTY_LABEL),
        })

    def _installable(self, state: u.AgentState, target: u.Target, facts: Facts) -> tuple[SignedRepository, Release] | Tick:
        """The signed release to write or stage into the target's slot, or the Tick giving it up."""
        refusal = may_write_slot(target.slot, facts.booted_slot.name,
                                 boot_blessed(facts.esp.entries(), facts.booted.version))
        if refusal:
            return self._give_up(state, target, f"slot {target.slot} may not be written: {refusal}")
        signed = self._signed_target(target)
        if signed is None:
            return self._give_up(state, target, f"release {target.version} is no longer offered")
        return signed

    def _writing(self, state: u.AgentState, writing: u.Writing, facts: Facts) -> Tick:
        signed = self._installable(state, writing.target, facts)
        if isinstance(signed, Tick):
            return signed
        repo, release = signed
        refusal = self._unsigned_uki(repo, release)
        if refusal and not refusal.final:
            # The incoming key of a db rotation, not in the firmware's db yet: again at the next poll.
            return self._give_up(state, writing.target, f"its UKI may not be staged yet: {refusal.why}")
        if refusal:
            why = f"its UKI is not signed by this host's Secure Boot db certificate: {refusal.why}"
            log("error", f"release {release.version} refused: {why}", version=release.version)
            state = self.store.save(u.reject(state))
            self._report(state, ReportEvent.FAILED, writing.target, why)
            return Tick(state, self.settings.poll_interval_s)
        slot = facts.slots[writing.target.slot]
        try:
            self._invalidate(facts, slot.name)
            state = self._write_slot(state, writing.progress, facts, repo, release, slot)
        except (WriteError, EspError) as error:
            self._invalidate(facts, slot.name)
            return self._give_up(state, writing.target, str(error))
        return Tick(state)

    def _unsigned_uki(self, repo: SignedRepository, release: Release) -> sbcheck.Refusal | None:
        """Why ``release``'s UKI may not be staged on this host, or None: on a host whose
        image carries a Secure Boot db certificate, a UKI no certificate it trusts (and
        its firmware's db holds, updater/agent/sbdb.py) signed is refused even though TUF
        signed the release (its firmware would refuse to boot it). Checked before the slot
        is touched, on the TUF-verified bytes (their sha256 is pinned, so the UKI staged
        later is this one)."""
        if not self.paths.secure_boot_db_cert.exists():
            return None
        # Only an update needs it: imported here, it stays out of the idle agent's memory.
        from updater.agent import sbcheck
        uki = release.artifacts[ArtifactRole.UKI]
        pe = repo.read_target(repo.target(uki.target_path))
        trust = sbcheck.firmware_trust(self.paths.secure_boot_db_cert.parent, self.paths.efivars)
        return sbcheck.check(pe, trust)

    def _written(self, state: u.AgentState, written: u.Written, facts: Facts) -> Tick:
        target = written.target
        signed = self._installable(state, target, facts)
        if isinstance(signed, Tick):
            return signed
        try:
            self._stage(facts, *signed, facts.slots[target.slot])
        except (WriteError, EspError) as error:
            self._invalidate(facts, target.slot)
            return self._give_up(state, target, str(error))
        state = self.store.save(u.mark_staged(state, self.clock()))
        # Only an update needs it: imported here, it stays out of the idle agent's memory.
        from updater.agent import delta
        return Tick(self._report(state, ReportEvent.STAGED, target, transfer=delta.transfer(self.state_dir, signed[1])))

    def _signed_target(self, target: u.Target) -> tuple[SignedRepository, Release] | None:
        """The repository and the signed release ``target`` names, unless it was withdrawn."""
        repo, releases = self.signed_releases()
        match = [r for r in releases if r.image_id == target.image_id and r.sort_key == target.version]
        return (repo, match[0]) if match and not match[0].withdrawn else None

    def _write_slot(
        self, state: u.AgentState, resumed: Mapping[str, u.Progress], facts: Facts, repo: SignedRepository,
        release: Release, slot: Slot,
    ) -> u.AgentState:
        """Write and read back both slot images, from where a cut step left them (``resumed``)."""
        parts = {ArtifactRole.ROOT: slot.root, ArtifactRole.VERITY: slot.verity}
        total = sum(release.artifacts[r].installed_size for r in SLOT_ROLES)
        base = 0
        for role in SLOT_ROLES:
            progress = resumed.get(role.value, u.Progress())
            state = self._write_artifact(state, progress, facts, repo, release, role, parts[role], (base, total))
            base += release.artifacts[role].installed_size
        base = 0
        for role in SLOT_ROLES:
            artifact = release.artifacts[role]

            def check_tick(done: int, base: int = base) -> None:
                self._progress(f"verifying slot {slot.name}", base + done, total)

            if not read_back(facts.disk, parts[role], artifact, check_tick):
                raise WriteError(f"{artifact.target_path}: read back from slot {slot.name} does not match")
            base += artifact.installed_size
        log("info", f"slot {slot.name} holds {release.version}, verified", slot=slot.name, version=release.version)
        return self.store.save(u.mark_written(state))

    def _write_artifact(
        self, state: u.AgentState, progress: u.Progress, facts: Facts, repo: SignedRepository,
        release: Release, role: ArtifactRole, part: Partition, span: tuple[int, int],
    ) -> u.AgentState:
        artifact = release.artifacts[role]
        if progress.wire_offset >= artifact.length and progress.installed_offset >= artifact.installed_size:
            return state
        holder = [state]
        what = f"writing {role.value} into partition {part.label!r}"

        def save(p: u.Progress) -> None:
            holder[0] = self.store.save(u.record_progress(holder[0], role.value, p))

        def tick(done: int) -> None:
            self._progress(what, span[0] + done, span[1])

        # Only an update needs it: imported here, it stays out of the idle agent's memory.

        from updater.agent import delta
        booted_part = facts.booted_slot.root if role is ArtifactRole.ROOT else facts.booted_slot.verity
        booted = delta.BootedSlot(booted_part, delta.booted_artifact(self.signed_releases()[1], facts.booted, role))
        delta.write_slot_artifact(facts.disk, part, release, role, repo, booted, progress, save, tick,
                                  self.state_dir)
        return holder[0]

    def _stage(self, facts: Facts, repo: SignedRepository, release: Release, slot: Slot) -> None:
        """Label the written slot for the initrd, then install its UKI with boot counting."""
        root_uuid, verity_uuid = uuids_from_roothash(release.roothash)
        root_label, verity_label = slot_labels(release.image_id, release.version)
        relabel(facts.disk, {slot.root.index: (root_uuid, root_label),
                             slot.verity.index: (verity_uuid, verity_label)})
        uki = release.artifacts[ArtifactRole.UKI]
        plan = plan_uki(facts.esp.entries(), release.sort_key,
                        lambda e: facts.esp.holds(e.filename, uki.installed_size, uki.installed_sha256))
        for entry in plan.remove:
            log("warning", f"{entry.filename} is not the signed UKI; installing it again",
                version=release.version)
            facts.esp.remove(entry)
        if plan.install:
            info = repo.target(uki.target_path)
            # Only an update needs it: imported here, it stays out of the idle agent's memory.
            from updater.agent import delta
            mine = entries_for(facts.esp.entries(), facts.booted.version)
            chunks = delta.uki_stream(repo, release, facts.esp.linux / mine[0].filename if mine else None,
                                      delta.booted_artifact(self.signed_releases()[1], facts.booted, ArtifactRole.UKI),
                                      self.state_dir)
            facts.esp.install(uki_filename(release.image_id, release.version, self.settings.boot_tries),
                              chunks, info.length, info.hashes["sha256"])

    def _progress(self, what: str, done: int, total: int) -> None:
        notify(STATUS=f"{what}: {100 * done // max(total, 1)}% of {total >> 20} MiB", WATCHDOG="1")

    def _give_up(self, state: u.AgentState, target: u.Target, why: str) -> Tick:
        log("error", f"update to {target.version} abandoned: {why}", version=target.version)
        state = self.store.save(u.abandon(state))
        self._report(state, ReportEvent.FAILED, target, why)
        return Tick(state, self.settings.poll_interval_s)

    def _staged(self, state: u.AgentState, staged: u.Staged, facts: Facts) -> Tick:
        target = staged.target
        if facts.booted.version == target.version:
            # A power cut or someone else's reboot already booted the staged entry: follow
            # that boot to its bless (or fallback) instead of spending a try on another reboot.
            log("warning", f"{target.version} booted before the agent rebooted", version=target.version)
            state = self.store.save(u.mark_rebooting(state))
            return Tick(self._report(state, ReportEvent.REBOOTING, target, "booted without the agent's reboot"))
        entries = entries_for(facts.esp.entries(), target.version)
        if entries and all(e.bad for e in entries):
            # Power cuts (or panics) spent every try of the staged entry before the agent
            # rebooted into it: systemd-boot has fallen back; judge that like any fallback.
            log("warning", f"{target.version}: every try spent before the agent rebooted", version=target.version)
            return Tick(self.store.save(u.mark_rebooting(state)))
        if not self.settings.auto_reboot:
            notify(STATUS=f"{target.version} staged; reboot to use it")
            return Tick(state, self.settings.poll_interval_s)
        window = self.strategy.reboot_window()
        if waits_for_window(window, datetime.fromtimestamp(self.clock(), UTC)):
            notify(STATUS=f"{target.version} staged; rebooting in the window {window} UTC")
            return Tick(self._back_in_service(state, target) or state, min(self.settings.poll_interval_s, 60))
        if not self.strategy.take_reboot_lock():
            notify(STATUS=f"{target.version} staged; waiting for a reboot lock")
            return Tick(self._back_in_service(state, target) or state, self.settings.lock_retry_s)
        # A power cut since staging may have left the entry short (vfat): check it once
        # more against the signed UKI right before the reboot that depends on it.
        signed = self._signed_target(target)
        try:
            if signed is None:
                raise WriteError(f"release {target.version} is no longer offered")
            self._stage(facts, *signed, facts.slots[target.slot])
        except (WriteError, EspError) as error:
            self.strategy.release_reboot_lock()
            self._invalidate(facts, target.slot)
            return self._give_up(state, target, str(error))
        if self.hooks.present():
            state = self.store.save(u.pre_reboot_started(state))
            why = self._run_hooks(Stage.PRE_REBOOT, target)
            if why is not None:
                return self._defer_reboot(state, target, why)
        state = self.store.save(u.mark_rebooting(state))
        state = self._report(state, ReportEvent.REBOOTING, target)
        return Tick(state, self._reboot())

    def _run_hooks(self, stage: Stage, target: u.Target | None) -> str | None:
        """Run one stage of the reboot hooks; why it failed, or None."""
        env = {"BERTH_HOOK_STAGE": stage.value, "BERTH_NODE_ID": self.node_id, "BERTH_GROUP": self.settings.group}
        if target is not None:
            env.update(BERTH_TARGET_VERSION=str(target.version), BERTH_FROM_VERSION=str(target.from_version))
        notify(STATUS=f"running the {stage.value} hooks")
        results = self.hooks.run(stage, env)
        why = failure(stage, results, self.settings.hook_timeout_s)
        if why is None:
            log("info", f"{stage.value} hooks done: {', '.join(r.name for r in results) or 'none'}")
        else:
            log("error", why)
        return why

    def _back_in_service(self, state: u.AgentState, target: u.Target | None) -> u.AgentState | None:
        """Run the post-bless hooks if the pre-reboot ones took the host out of service:
        the state with the host back in service (the lock not yet given back), or None
        when they failed (the lock stays held and a later step tries again)."""
        if not state.post_bless_due:
            return state
        why = self._run_hooks(Stage.POST_BLESS, target)
        if why is not None:
            still = still_out_of_service(why, self.strategy.take_reboot_lock() if state.lock_held else None)
            log(still.level, still.message)
            notify(STATUS=still.message)
            return None
        return self.store.save(u.back_in_service(state))

    def _defer_reboot(self, state: u.AgentState, target: u.Target, why: str) -> Tick:
        """A pre-reboot hook failed: report it, put the host back in service and give the
        lock back; the update stays staged and a later step tries the reboot again."""
        state = self._report(state, ReportEvent.STAGED, target, f"reboot deferred: {why}")
        back = self._back_in_service(state, target)
        if back is None:
            return Tick(state, self.settings.lock_retry_s)
        if self.strategy.release_reboot_lock() and back.lock_held:
            back = self.store.save(u.lock_released(back))
        return Tick(back, self.settings.poll_interval_s)

    def _reboot(self) -> float:
        notify(STATUS="rebooting")
        log("info", f"rebooting: {self.settings.reboot_command}")
        subprocess.run(shlex.split(self.settings.reboot_command), check=False)
        return self.settings.poll_interval_s

    def _rebooting(self, state: u.AgentState, rebooting: u.Rebooting, facts: Facts) -> Tick:
        target = rebooting.target
        entries = facts.esp.entries()
        action = after_reboot(target.version, facts.booted.version, entries,
                              rebooting.unblessed_since, self.clock(), self.settings.bless_timeout_s)
        if action == AfterReboot.WAIT_FOR_BLESS:
            state = self.store.save(u.note_unblessed(state, self.clock()))
            notify(STATUS=f"{target.version} booted, waiting for boot-complete.target")
            return Tick(state, min(self.settings.poll_interval_s, 10))
        if action in (AfterReboot.REBOOT_AGAIN, AfterReboot.REBOOT_PENDING):
            log("warning", f"{target.version}: {action.value}", version=target.version)
            state = self.store.save(u.mark_rebooting(state))
            return Tick(state, self._reboot())
        if action == AfterReboot.BLESSED:
            other = facts.slots[other_slot(facts.booted_slot.name)].label_version
            self._remove(facts, removed_after_bless(entries, facts.booted.version, other))
            state = self.store.save(u.finish_blessed(state))
            state = self._report(state, ReportEvent.BLESSED, target)
        else:
            self._remove(facts, removed_after_fallback(entries, target.version))
            verdict = judge_fallback(
                failed_checks(self.state_dir, target.roothash),
                panics_since(Path(self.settings.pstore_dir), rebooting.staged_at),
                rebooting.fallbacks, self.settings.unexplained_retries,
            )
            detail = f"systemd-boot fell back to {facts.booted.version}: {verdict.detail}"
            if verdict.try_again:
                # The slot still holds the verified version: only its UKI goes back, with fresh tries.
                state = self.store.save(u.try_again(state))
                return Tick(self._report(state, ReportEvent.REBOOTING, target, detail, verdict.cause))
            explained = verdict.cause is not RollbackCause.UNEXPLAINED
            state = self.store.save(u.finish_rolled_back(state, explained))
            # Only once the verdict is saved: a cut before it must find the evidence again.
            forget_trial_failures(self.state_dir, target.roothash)
            state = self._report(state, ReportEvent.ROLLED_BACK, target, detail, verdict.cause)
        back = self._back_in_service(state, target)
        if back is None:
            return Tick(state, self.settings.lock_retry_s)
        state = back
        if self.strategy.release_reboot_lock():
            state = self.store.save(u.lock_released(state))
        return Tick(state, self.settings.poll_interval_s)

    @staticmethod
    def _remove(facts: Facts, entries: list[BootEntry]) -> None:
        for entry in entries:
            facts.esp.remove(entry)
