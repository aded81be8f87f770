"""The agent's update state: a tagged union of phases, checked transitions, JSON form.

One update at a time moves Idle -> Writing -> Written -> Staged -> Rebooting
and back to Idle (blessed, rolled back, or abandoned). Each phase is a
variant carrying only the data it has (a Writing knows its progress, a
Rebooting when its boot was first seen unblessed), so no code asks "is there
a target?". Beside the phase, ``AgentState`` holds what is true of the host
whatever the phase: the report sequence, the versions it refuses, whether it
holds the fleet's reboot lock, whether its post-bless hooks are still due (its
pre-reboot hooks took it out of service). Every transition names the phases it may start
from and refuses any other, so a state read back after a power cut can only
continue the way it was going. Pure: the store (statefile.py) persists what
these functions return.

Versions are ``Version``s here and text in the file: ``from_json`` parses them
(a bad one is refused naming its text), ``to_json`` writes each one's own text
back, so the file keeps the shape every release's agent reads.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

from updater.version import Version


class State(enum.StrEnum):
    """The phases' names: the "state" of state.json, logs and `berth agent status`."""

    IDLE = "idle"  # nothing in progress; the booted slot is the only one that counts
    WRITING = "writing"  # streaming a release into the inactive slot (resumable)
    WRITTEN = "written"  # slot contents read back and verified; partitions not yet labelled
    STAGED = "staged"  # partitions labelled, UKI installed with tries: waiting to reboot
    REBOOTING = "rebooting"  # reboot lock taken and reboot asked for


class TransitionError(RuntimeError):
    """A transition asked for from a phase it may not start from."""


@dataclass(frozen=True)
class Progress:
    """How far one artifact got into its partition (what a restart resumes from)."""

    wire_offset: int = 0  # bytes of the transport stream consumed
    installed_offset: int = 0  # bytes written to the partition
    # The wire hash is only known when one process saw the whole stream; a
    # resumed write relies on the read-back of installed_sha256 instead.
    resumed: bool = False


def _versions(values: Any) -> tuple[Version, ...]:
    """Versions as given: parsed from text (a state file's list, a caller's strings)."""
    return tuple(v if isinstance(v, Version) else Version.parse(v) for v in values)


@dataclass(frozen=True)
class Target:
    image_id: str
    version: Version
    roothash: str
    slot: str  # "a" or "b"
    from_version: Version

    def __post_init__(self) -> None:
        # Built from text (the state file's target, a test's literal): parsed here, once.
        version, from_version = _versions((self.version, self.from_version))
        object.__setattr__(self, "version", version)
        object.__setattr__(self, "from_version", from_version)

    def to_json(self) -> dict[str, Any]:
        return {**vars(self), "version": str(self.version), "from_version": str(self.from_version)}


@dataclass(frozen=True)
class Idle:
    name: ClassVar[State] = State.IDLE


@dataclass(frozen=True)
class Writing:
    name: ClassVar[State] = State.WRITING
    target: Target
    progress: Mapping[str, Progress] = field(default_factory=dict)  # by artifact role


@dataclass(frozen=True)
class Written:
    name: ClassVar[State] = State.WRITTEN
    target: Target


@dataclass(frozen=True)
class _Trial:
    """What staging starts and every reboot into the target carries on."""

    target: Target
    # When the target was staged: a panic recorded after it is a boot of the target's.
    staged_at: float
    # Fallbacks from the target that nothing explained, each followed by a try again.
    fallbacks: int = 0


@dataclass(frozen=True)
class Staged(_Trial):
    name: ClassVar[State] = State.STAGED


@dataclass(frozen=True)
class Rebooting(_Trial):
    name: ClassVar[State] = State.REBOOTING
    # When the agent first saw the new version booted but not yet blessed.
    unblessed_since: float | None = None


Phase = Idle | Writing | Written | Staged | Rebooting
Updating = Writing | Written | Staged | Rebooting


@dataclass(frozen=True)
class AgentState:
    phase: Phase = Idle()
    seq: int = 0  # last report sequence number used
    # Rolled back for a cause seen (a failed check, a panic): never taken again.
    bad_versions: tuple[Version, ...] = ()
    # Fell back with no cause seen, every try again too: not bad, but not taken again by itself.
    unexplained_versions: tuple[Version, ...] = ()
    lock_held: bool = False
    # The pre-reboot hooks ran (or began): the post-bless hooks must run, and succeed,
    # before the lock goes back (updater/agent/hooks.py). Written only when set, so a
    # host without hooks writes the previous release's keys, and that agent ignores it.
    post_bless_due: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "bad_versions", _versions(self.bad_versions))
        object.__setattr__(self, "unexplained_versions", _versions(self.unexplained_versions))

    @property
    def refused_versions(self) -> tuple[Version, ...]:
        """Versions this host does not take again (told to the fleet server as bad)."""
        return (*self.bad_versions, *self.unexplained_versions)

    def to_json(self) -> dict[str, Any]:
        """The phase's name under "state", its own fields beside the host's.

        The keys are those the previous release's agent wrote, each phase writing
        only the ones it carries: that agent reads this file again (absent keys
        default) when systemd-boot falls back to it from an update it had started.
        """
        data: dict[str, Any] = {
            "state": self.phase.name.value,
            "seq": self.seq,
            "bad_versions": [str(v) for v in self.bad_versions],
            "unexplained_versions": [str(v) for v in self.unexplained_versions],
            "lock_held": self.lock_held,
        }
        if self.post_bless_due:
            data["post_bless_due"] = True
        match self.phase:
            case Idle():
                pass
            case Writing(target=target, progress=progress):
                data["target"] = target.to_json()
                data["progress"] = {role: vars(p).copy() for role, p in progress.items()}
            case Written(target=target):
                data["target"] = target.to_json()
            case Staged(target=target, staged_at=staged_at, fallbacks=fallbacks):
                data.update(target=target.to_json(), staged_at=staged_at, fallbacks=fallbacks)
            case Rebooting(target=target, staged_at=staged_at, fallbacks=fallbacks,
                           unblessed_since=unblessed_since):
                data.update(target=target.to_json(), staged_at=staged_at, fallbacks=fallbacks,
                            unblessed_since=unblessed_since)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> AgentState:
        """This form, or the previous release's (every key written, null where unused)."""
        return cls(
            phase=_phase_from_json(data),
            seq=int(data["seq"]),
            bad_versions=_versions(data.get("bad_versions", ())),
            unexplained_versions=_versions(data.get("unexplained_versions", ())),
            lock_held=bool(data.get("lock_held", False)),
            post_bless_due=bool(data.get("post_bless_due", False)),
        )


def _phase_from_json(data: dict[str, Any]) -> Phase:
    name = State(data["state"])
    if name is State.IDLE:
        return Idle()
    if not isinstance(data.get("target"), dict):
        raise TypeError(f"state {name.value} without its target")
    target = Target(**data["target"])
    # The previous release wrote null for a staging time it never had (never after staging).
    staged_at = float(data.get("staged_at") or 0.0)
    fallbacks = int(data.get("fallbacks") or 0)
    match name:
        case State.WRITING:
            return Writing(target, {role: Progress(**p) for role, p in (data.get("progress") or {}).items()})
        case State.WRITTEN:
            return Written(target)
        case State.STAGED:
            return Staged(target, staged_at, fallbacks)
        case State.REBOOTING:
            return Rebooting(target, staged_at, fallbacks, data.get("unblessed_since"))
    raise ValueError(f"unknown state {name.value}")  # pragma: no cover - State is exhaustive


def _refused(current: AgentState, name: str, *allowed: State) -> TransitionError:
    wanted = ", ".join(s.value for s in allowed)
    return TransitionError(f"{name}: not allowed from {current.phase.name.value} (only from {wanted})")


def next_seq(current: AgentState) -> AgentState:
    """Reserve the next report number (persisted before the report is sent)."""
    return replace(current, seq=current.seq + 1)


def start_writing(current: AgentState, target: Target) -> AgentState:
    if not isinstance(current.phase, Idle):
        raise _refused(current, "start_writing", State.IDLE)
    return replace(current, phase=Writing(target))


def record_progress(current: AgentState, role: str, progress: Progress) -> AgentState:
    if not isinstance(current.phase, Writing):
        raise _refused(current, "record_progress", State.WRITING)
    phase = current.phase
    return replace(current, phase=replace(phase, progress={**phase.progress, role: progress}))


def mark_written(current: AgentState) -> AgentState:
    if not isinstance(current.phase, Writing):
        raise _refused(current, "mark_written", State.WRITING)
    return replace(current, phase=Written(current.phase.target))


def mark_staged(current: AgentState, now: float) -> AgentState:
    if not isinstance(current.phase, Written):
        raise _refused(current, "mark_staged", State.WRITTEN)
    return replace(current, phase=Staged(current.phase.target, staged_at=now))


def mark_rebooting(current: AgentState) -> AgentState:
    if not isinstance(current.phase, Staged | Rebooting):
        raise _refused(current, "mark_rebooting", State.STAGED, State.REBOOTING)
    phase = current.phase
    # Each reboot starts a new boot, whose bless deadline starts when it is seen.
    return replace(current, lock_held=True,
                   phase=Rebooting(phase.target, phase.staged_at, phase.fallbacks, unblessed_since=None))


def note_unblessed(current: AgentState, now: float) -> AgentState:
    if not isinstance(current.phase, Rebooting):
        raise _refused(current, "note_unblessed", State.REBOOTING)
    if current.phase.unblessed_since is not None:
        return current
    return replace(current, phase=replace(current.phase, unblessed_since=now))


def finish_blessed(current: AgentState) -> AgentState:
    if not isinstance(current.phase, Rebooting):
        raise _refused(current, "finish_blessed", State.REBOOTING)
    return replace(current, phase=Idle())


def finish_rolled_back(current: AgentState, explained: bool) -> AgentState:
    """The update is over, the host back on the previous version; ``explained``: a failed
    check or a panic was seen, so the version is bad for good."""
    if not isinstance(current.phase, Rebooting):
        raise _refused(current, "finish_rolled_back", State.REBOOTING)
    done = replace(current, phase=Idle())
    version = current.phase.target.version
    if explained:
        return replace(done, bad_versions=tuple(dict.fromkeys((*current.bad_versions, version))))
    return replace(done, unexplained_versions=tuple(dict.fromkeys((*current.unexplained_versions, version))))


def try_again(current: AgentState) -> AgentState:
    """After a fallback nothing explains: the slot still holds the version; stage it again."""
    if not isinstance(current.phase, Rebooting):
        raise _refused(current, "try_again", State.REBOOTING)
    phase = current.phase
    return replace(current, phase=Staged(phase.target, phase.staged_at, phase.fallbacks + 1))


def abandon(current: AgentState) -> AgentState:
    """Give up an update that has not rebooted yet (bad download, withdrawn release)."""
    if not isinstance(current.phase, Writing | Written | Staged):
        raise _refused(current, "abandon", State.WRITING, State.WRITTEN, State.STAGED)
    return replace(current, phase=Idle())


def reject(current: AgentState) -> AgentState:
    """Give up an update whose release this host must never take (its UKI is not signed by
    the host's Secure Boot db certificate): abandoned, and bad for good, before any write."""
    if not isinstance(current.phase, Writing):
        raise _refused(current, "reject", State.WRITING)
    version = current.phase.target.version
    return replace(current, phase=Idle(), bad_versions=tuple(dict.fromkeys((*current.bad_versions, version))))


def lock_released(current: AgentState) -> AgentState:
    """Idle, or Staged again (a try again holds the lock) when its reboot waits."""
    if not isinstance(current.phase, Idle | Staged):
        raise _refused(current, "lock_released", State.IDLE, State.STAGED)
    return replace(current, lock_held=False)


def pre_reboot_started(current: AgentState) -> AgentState:
    """The pre-reboot hooks are about to run: from now on the host may be out of service
    (drained), saved before they run so that a power cut cannot forget it. The reboot
    lock was granted just before: held from now on (renewed while the host is out)."""
    if not isinstance(current.phase, Staged):
        raise _refused(current, "pre_reboot_started", State.STAGED)
    return replace(current, post_bless_due=True, lock_held=True)


def back_in_service(current: AgentState) -> AgentState:
    """The post-bless hooks succeeded: the host is in service again (blessed, rolled back,
    or its reboot deferred)."""
    if not isinstance(current.phase, Idle | Staged):
        raise _refused(current, "back_in_service", State.IDLE, State.STAGED)
    return replace(current, post_bless_due=False)
