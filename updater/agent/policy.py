"""The agent's decisions, as pure functions: which release, which slot, may I, what now.

Nothing here reads a disk or a socket; agent.py gathers the facts and acts on
the answers.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from updater.agent.entries import entries_for
from updater.agent.slots import Slot
from updater.contract import BootEntry
from updater.eligibility import newest_eligible, refusal
from updater.release import Release
from updater.version import Version
from updater.window import Window
from updater.wire import RollbackCause


def other_slot(slot: str) -> str:
    return {"a": "b", "b": "a"}[slot]


def choose_release(
    releases: list[Release],
    image_id: str,
    current: Version,
    bad: tuple[Version, ...],
    wanted: Version | None,
) -> tuple[Release | None, str]:
    """The release to install and why; ``wanted`` is the fleet server's pick, if any.

    Without a server the agent takes the newest release it may take (the rule is
    the server's own: updater.eligibility).
    """
    refused = set(bad)
    if wanted is not None:
        match = [r for r in releases if r.image_id == image_id and r.sort_key == wanted]
        if not match:
            return None, f"server offered {wanted}, which the signed repository does not hold"
        reason = refusal(match[0], image_id, current, refused)
        return (None, f"server offered {wanted}: {reason}") if reason else (match[0], "offered")
    newest = newest_eligible(releases, image_id, current, refused)
    if newest is None:
        return None, f"no release newer than {current}"
    return newest, "newest"


def boot_blessed(entries: list[BootEntry], booted_version: Version) -> bool:
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


def plan_uki(entries: list[BootEntry], version: Version, is_signed: Callable[[BootEntry], bool]) -> UkiPlan:
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


def removed_after_bless(
    entries: list[BootEntry], booted_version: Version, other_slot_version: Version | None
) -> list[BootEntry]:
    """Once the new version is blessed, entries of neither slot's version go: they could boot nothing."""
    keep = {booted_version} | ({other_slot_version} if other_slot_version else set())
    return stale_entries(entries, keep)


def removed_after_fallback(entries: list[BootEntry], target_version: Version) -> list[BootEntry]:
    """After a fallback from the target, its entries go (a try again installs a fresh one)."""
    return entries_for(entries, target_version)


def stale_entries(entries: list[BootEntry], keep_versions: set[Version]) -> list[BootEntry]:
    """Entries whose version lives in neither slot (they could boot nothing)."""
    return [e for e in entries if e.parsed_version not in keep_versions]


class AfterReboot(enum.StrEnum):
    BLESSED = "blessed"  # the new version booted and was blessed
    WAIT_FOR_BLESS = "wait_for_bless"  # new version up, health checks still running
    REBOOT_AGAIN = "reboot_again"  # new version never got blessed in time: spend a try
    ROLLED_BACK = "rolled_back"  # systemd-boot fell back to the previous version
    REBOOT_PENDING = "reboot_pending"  # still on the old version with tries left: reboot again


def after_reboot(
    target_version: Version,
    booted_version: Version,
    entries: list[BootEntry],
    unblessed_since: float | None,
    now: float,
    bless_timeout_s: float,
) -> AfterReboot:
    target = entries_for(entries, target_version)
    if booted_version == target_version:
        if target and all(e.blessed for e in target):
            return AfterReboot.BLESSED
        if unblessed_since is not None and now - unblessed_since >= bless_timeout_s:
            return AfterReboot.REBOOT_AGAIN
        return AfterReboot.WAIT_FOR_BLESS
    if not target or all(e.bad for e in target):
        return AfterReboot.ROLLED_BACK
    return AfterReboot.REBOOT_PENDING


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


@dataclass(frozen=True)
class StillOut:
    """What the agent says while its host stays out of service (post-bless hooks failing)."""

    level: str  # the journal's
    message: str


def still_out_of_service(why: str, lock: bool | None) -> StillOut:
    """The post-bless hooks failed (``why``) and will be run again every lock_retry_s.

    The host is still out of service, so it keeps its reboot slot: each retry renews the
    lock's lease (a pre-reboot from the holder renews it, and takes a slot afresh if the
    lease ran out meanwhile), so no other host of the group goes down while this one's
    work is away, however long the hooks keep failing. ``lock``: None, none is held;
    True, renewed; False, refused or unanswered: the slot may be another host's now,
    which is said as an error (and the host still comes back when the hooks succeed).
    """
    if lock is False:
        return StillOut("error", f"{why}; the reboot lock could not be renewed (its lease may have run out "
                                 "and another host may reboot now); trying the hooks and the lock again")
    held = "keeping the reboot lock (renewed)" if lock else "no reboot lock held"
    return StillOut("warning", f"{why}; {held}, trying again")
