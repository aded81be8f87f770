"""The agent's update state machine: named states, checked transitions, JSON form.

One update at a time moves idle -> writing -> written -> staged -> rebooting
and back to idle (blessed, rolled back, or abandoned). Every transition names
the states it may start from and refuses any other, so a state read back
after a power cut can only continue the way it was going. Pure: the store
(statefile.py) persists what these functions return.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace
from typing import Any


class State(enum.StrEnum):
    IDLE = "idle"  # nothing in progress; the booted slot is the only one that counts
    WRITING = "writing"  # streaming a release into the inactive slot (resumable)
    WRITTEN = "written"  # slot contents read back and verified; partitions not yet labelled
    STAGED = "staged"  # partitions labelled, UKI installed with tries: waiting to reboot
    REBOOTING = "rebooting"  # reboot lock taken and reboot asked for


class TransitionError(RuntimeError):
    """A transition asked for from a state it may not start from."""


@dataclass(frozen=True)
class Progress:
    """How far one artifact got into its partition (what a restart resumes from)."""

    wire_offset: int = 0  # bytes of the transport stream consumed
    installed_offset: int = 0  # bytes written to the partition
    # The wire hash is only known when one process saw the whole stream; a
    # resumed write relies on the read-back of installed_sha256 instead.
    resumed: bool = False


@dataclass(frozen=True)
class Target:
    image_id: str
    version: str
    roothash: str
    slot: str  # "a" or "b"
    from_version: str


@dataclass(frozen=True)
class AgentState:
    state: State = State.IDLE
    seq: int = 0  # last report sequence number used
    # Rolled back for a cause seen (a failed check, a panic): never taken again.
    bad_versions: tuple[str, ...] = ()
    # Fell back with no cause seen, every try again too: not bad, but not taken again by itself.
    unexplained_versions: tuple[str, ...] = ()
    target: Target | None = None
    progress: dict[str, Progress] = field(default_factory=dict)
    lock_held: bool = False
    # When the agent first saw the new version booted but not yet blessed.
    unblessed_since: float | None = None
    # When the target was staged: a panic recorded after it is a boot of the target's.
    staged_at: float | None = None
    # Fallbacks from the target that nothing explained, each followed by a try again.
    fallbacks: int = 0

    @property
    def refused_versions(self) -> tuple[str, ...]:
        """Versions this host does not take again (told to the fleet server as bad)."""
        return (*self.bad_versions, *self.unexplained_versions)

    def to_json(self) -> dict[str, Any]:
        return {
            "state": self.state.value,
            "seq": self.seq,
            "bad_versions": list(self.bad_versions),
            "unexplained_versions": list(self.unexplained_versions),
            "target": None if self.target is None else vars(self.target).copy(),
            "progress": {role: vars(p).copy() for role, p in self.progress.items()},
            "lock_held": self.lock_held,
            "unblessed_since": self.unblessed_since,
            "staged_at": self.staged_at,
            "fallbacks": self.fallbacks,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> AgentState:
        target = data.get("target")
        return cls(
            state=State(data["state"]),
            seq=int(data["seq"]),
            bad_versions=tuple(data.get("bad_versions", ())),
            unexplained_versions=tuple(data.get("unexplained_versions", ())),
            target=None if target is None else Target(**target),
            progress={role: Progress(**p) for role, p in data.get("progress", {}).items()},
            lock_held=bool(data.get("lock_held", False)),
            unblessed_since=data.get("unblessed_since"),
            staged_at=data.get("staged_at"),
            fallbacks=int(data.get("fallbacks", 0)),
        )


def _check(current: AgentState, allowed: tuple[State, ...], name: str) -> None:
    if current.state not in allowed:
        wanted = ", ".join(s.value for s in allowed)
        raise TransitionError(f"{name}: not allowed from {current.state.value} (only from {wanted})")


def next_seq(current: AgentState) -> AgentState:
    """Reserve the next report number (persisted before the report is sent)."""
    return replace(current, seq=current.seq + 1)


def start_writing(current: AgentState, target: Target) -> AgentState:
    _check(current, (State.IDLE,), "start_writing")
    return replace(current, state=State.WRITING, target=target, progress={}, unblessed_since=None,
                   staged_at=None, fallbacks=0)


def record_progress(current: AgentState, role: str, progress: Progress) -> AgentState:
    _check(current, (State.WRITING,), "record_progress")
    return replace(current, progress={**current.progress, role: progress})


def mark_written(current: AgentState) -> AgentState:
    _check(current, (State.WRITING,), "mark_written")
    return replace(current, state=State.WRITTEN)


def mark_staged(current: AgentState, now: float) -> AgentState:
    _check(current, (State.WRITTEN,), "mark_staged")
    return replace(current, state=State.STAGED, progress={}, staged_at=now)


def mark_rebooting(current: AgentState) -> AgentState:
    _check(current, (State.STAGED, State.REBOOTING), "mark_rebooting")
    # Each reboot starts a new boot, whose bless deadline starts when it is seen.
    return replace(current, state=State.REBOOTING, lock_held=True, unblessed_since=None)


def note_unblessed(current: AgentState, now: float) -> AgentState:
    _check(current, (State.REBOOTING,), "note_unblessed")
    if current.unblessed_since is not None:
        return current
    return replace(current, unblessed_since=now)


def finish_blessed(current: AgentState) -> AgentState:
    _check(current, (State.REBOOTING,), "finish_blessed")
    return replace(current, state=State.IDLE, target=None, unblessed_since=None)


def finish_rolled_back(current: AgentState, explained: bool) -> AgentState:
    """The update is over, the host back on the previous version; ``explained``: a failed
    check or a panic was seen, so the version is bad for good."""
    _check(current, (State.REBOOTING,), "finish_rolled_back")
    assert current.target is not None
    done = replace(current, state=State.IDLE, target=None, unblessed_since=None, staged_at=None, fallbacks=0)
    version = current.target.version
    if explained:
        return replace(done, bad_versions=tuple(dict.fromkeys((*current.bad_versions, version))))
    return replace(done, unexplained_versions=tuple(dict.fromkeys((*current.unexplained_versions, version))))


def try_again(current: AgentState) -> AgentState:
    """After a fallback nothing explains: the slot still holds the version; stage it again."""
    _check(current, (State.REBOOTING,), "try_again")
    return replace(current, state=State.STAGED, unblessed_since=None, fallbacks=current.fallbacks + 1)


def abandon(current: AgentState) -> AgentState:
    """Give up an update that has not rebooted yet (bad download, withdrawn release)."""
    _check(current, (State.WRITING, State.WRITTEN, State.STAGED), "abandon")
    return replace(current, state=State.IDLE, target=None, progress={})


def lock_released(current: AgentState) -> AgentState:
    _check(current, (State.IDLE,), "lock_released")
    return replace(current, lock_held=False)
