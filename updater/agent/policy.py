"""The agent's decisions, as pure functions: which release, which slot, may I, what now.

Nothing here reads a disk or a socket; agent.py gathers the facts and acts on
the answers.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, time

from updater.agent.entries import entries_for
from updater.agent.slots import Slot
from updater.contract import BootEntry
from updater.release import Release
from updater.wire import RollbackCause, Version


def other_slot(slot: str) -> str:
    return {"a": "b", "b": "a"}[slot]


def eligible(release: Release, image_id: str, current: str, bad: tuple[str, ...]) -> str | None:
    """Why ``release`` may not be taken from ``current``, or None when it may."""
    version = Version.parse(release.version)
    if release.image_id != image_id:
        return f"image {release.image_id} is not {image_id}"
    if release.withdrawn:
        return "withdrawn"
    if version <= Version.parse(current):
        return f"not newer than {current}"
    if any(version == Version.parse(b) for b in bad):
        return "rolled back on this host before"
    if release.min_version and Version.parse(current) < Version.parse(release.min_version):
        return f"needs at least {release.min_version} to update from"
    return None


def choose_release(
    releases: list[Release],
    image_id: str,
    current: str,
    bad: tuple[str, ...],
    wanted: str | None,
) -> tuple[Release | None, str]:
    """The release to install and why; ``wanted`` is the fleet server's pick, if any.

    Without a server the agent takes the newest release it may take.
    """
    if wanted is not None:
        match = [r for r in releases if r.image_id == image_id and r.version == wanted]
        if not match:
            return None, f"server offered {wanted}, which the signed repository does not hold"
        reason = eligible(match[0], image_id, current, bad)
        return (None, f"server offered {wanted}: {reason}") if reason else (match[0], "offered")
    candidates = [r for r in releases if eligible(r, image_id, current, bad) is None]
    if not candidates:
        return None, f"no release newer than {current}"
    return max(candidates, key=lambda r: r.sort_key), "newest"


def boot_blessed(entries: list[BootEntry], booted_version: str) -> bool:
    """The current boot counts as good once its entry carries no tries counter."""
    mine = entries_for(entries, booted_version)
    return bool(mine) and all(e.blessed for e in mine)


def may_write_slot(slot: str, booted_slot: str, current_boot_blessed: bool) -> str | None:
    """Why ``slot`` may not be written now, or None.

    The inactive slot is the fallback while the current boot is unblessed, so
    it stays untouched until systemd-bless-boot has accepted this boot.
    """
    if slot == booted_slot:
        return "it is the booted slot"
    if not current_boot_blessed:
        return "the current boot is not blessed yet and that slot is the fallback"
    return None


def slot_fits(release: Release, slot: Slot) -> str | None:
    """Why ``release``'s images do not fit ``slot``'s partitions, or None when they do."""
    if release.slot_size > slot.root.size or release.verity_slot_size > slot.verity.size:
        return (f"needs slots of {release.slot_size}+{release.verity_slot_size} bytes, "
                f"slot {slot.name} has {slot.root.size}+{slot.verity.size}")
    return None


@dataclass(frozen=True)
class UkiPlan:
    """What staging a version's UKI needs: the entries to remove first, then install or not."""

    remove: tuple[BootEntry, ...]
    install: bool


def plan_uki(entries: list[BootEntry], version: str, is_signed: Callable[[BootEntry], bool]) -> UkiPlan:
    """Stage ``version``'s UKI once: an entry of it that ``is_signed`` (exactly the signed
    UKI) means it was installed before a power cut cut the state update short; any other
    entry of it is what a cut left of an earlier install, removed before installing again.

    ``is_signed`` is asked in entry order and no further than the first yes (each answer
    reads a whole UKI from the ESP).
    """
    installed = entries_for(entries, version)
    if any(is_signed(e) for e in installed):
        return UkiPlan((), False)
    return UkiPlan(tuple(installed), True)


def removed_after_bless(entries: list[BootEntry], booted_version: str, other_slot_version: str | None) -> list[BootEntry]:
    """Once the new version is blessed, entries of neither slot's version go: they could boot nothing."""
    keep = {booted_version} | ({other_slot_version} if other_slot_version else set())
    return stale_entries(entries, keep)


def removed_after_fallback(entries: list[BootEntry], target_version: str) -> list[BootEntry]:
    """After a fallback from the target, its entries go (a try again installs a fresh one)."""
    return entries_for(entries, target_version)


def stale_entries(entries: list[BootEntry], keep_versions: set[str]) -> list[BootEntry]:
    """Entries whose version lives in neither slot (they could boot nothing)."""
    keep = {Version.parse(v) for v in keep_versions}
    return [e for e in entries if Version.parse(e.version) not in keep]


class AfterReboot(enum.StrEnum):
    BLESSED = "blessed"  # the new version booted and was blessed
    WAIT_FOR_BLESS = "wait_for_bless"  # new version up, health checks still running
    REBOOT_AGAIN = "reboot_again"  # new version never got blessed in time: spend a try
    ROLLED_BACK = "rolled_back"  # systemd-boot fell back to the previous version
    REBOOT_PENDING = "reboot_pending"  # still on the old version with tries left: reboot again


def after_reboot(
    target_version: str,
    booted_version: str,
    entries: list[BootEntry],
    unblessed_since: float | None,
    now: float,
    bless_timeout_s: float,
) -> AfterReboot:
    target = entries_for(entries, target_version)
    if Version.parse(booted_version) == Version.parse(target_version):
        if target and all(e.blessed for e in target):
            return AfterReboot.BLESSED
        if unblessed_since is not None and now - unblessed_since >= bless_timeout_s:
            return AfterReboot.REBOOT_AGAIN
        return AfterReboot.WAIT_FOR_BLESS
    if not target or all(e.bad for e in target):
        return AfterReboot.ROLLED_BACK
    return AfterReboot.REBOOT_PENDING


_WINDOW = re.compile(r"([01][0-9]|2[0-3]):([0-5][0-9])-([01][0-9]|2[0-3]):([0-5][0-9])")


@dataclass(frozen=True)
class Window:
    """A daily maintenance window in UTC, e.g. 02:00-04:00 (may wrap past midnight)."""

    start: time
    end: time

    @classmethod
    def parse(cls, text: str) -> Window:
        match = _WINDOW.fullmatch(text)
        if not match:
            raise ValueError(f"maintenance window must look like 02:00-04:00, got {text!r}")
        h1, m1, h2, m2 = (int(g) for g in match.groups())
        return cls(time(h1, m1), time(h2, m2))

    def __str__(self) -> str:
        return f"{self.start:%H:%M}-{self.end:%H:%M}"

    def contains(self, moment: datetime) -> bool:
        now = moment.time().replace(second=0, microsecond=0)
        if self.start <= self.end:
            return self.start <= now < self.end
        return now >= self.start or now < self.end


def waits_for_window(window: Window | None, moment: datetime) -> bool:
    """Whether a staged update waits to reboot: ``window`` is the strategy's own (a host
    without a fleet server); a fleet server paces reboots itself and gives None."""
    return window is not None and not window.contains(moment)


@dataclass(frozen=True)
class FallbackVerdict:
    """What a fallback from a new version means (see judge_fallback)."""

    cause: RollbackCause
    try_again: bool  # stage the version again (an unexplained fallback, tries again left)
    detail: str


def judge_fallback(
    failed_checks: tuple[str, ...], panics: int, fallbacks_so_far: int, retries: int
) -> FallbackVerdict:
    """Why systemd-boot fell back, from what the failed boots left on /var.

    A failed health check (its OnFailure= handler wrote down the unit) or a kernel
    panic (systemd-pstore kept its record) is the version's fault: it is bad for
    good. Nothing seen means the boots were cut short from outside (power loss, a
    hang, the firmware): the version is tried again, at most ``retries`` times.
    """
    if failed_checks:
        return FallbackVerdict(RollbackCause.HEALTH_CHECK, False,
                               f"health check failed: {', '.join(failed_checks)}")
    if panics:
        return FallbackVerdict(RollbackCause.KERNEL_PANIC, False,
                               f"the kernel panicked ({panics} record{'s' if panics > 1 else ''} kept by pstore)")
    if fallbacks_so_far < retries:
        return FallbackVerdict(RollbackCause.UNEXPLAINED, True,
                               f"no failed check or panic recorded (power loss, hang, firmware?); "
                               f"trying again ({fallbacks_so_far + 1} of {retries})")
    return FallbackVerdict(RollbackCause.UNEXPLAINED, False,
                           f"no failed check or panic recorded (power loss, hang, firmware?), "
                           f"{fallbacks_so_far + 1} times")
