"""A host's update state as the server sees it, moved only by allowed transitions.

``idle`` and ``offered`` are the server's own steps (a decision gave the host a
target); every other state is the last report's event (updater.wire.ReportEvent),
so a host's state is named by what its agent said. The members are written out
because a type checker cannot see members made at run time, but their values
are the report events' own, and importing this module fails if the two ever
part. A report whose event may not follow the host's current state is refused
and changes nothing.
"""

from __future__ import annotations

import enum

from updater.wire import ReportEvent, RollbackCause


class HostState(enum.StrEnum):
    IDLE = "idle"  # known, no update under way
    OFFERED = "offered"  # a decision gave it a target; no report yet
    DOWNLOADING = ReportEvent.DOWNLOADING.value
    STAGED = ReportEvent.STAGED.value
    REBOOTING = ReportEvent.REBOOTING.value
    BLESSED = ReportEvent.BLESSED.value
    ROLLED_BACK = ReportEvent.ROLLED_BACK.value
    FAILED = ReportEvent.FAILED.value


# The server's own steps; every other state is a report event's.
SERVER_STEPS = frozenset({HostState.IDLE, HostState.OFFERED})
if {s.value for s in HostState} - {s.value for s in SERVER_STEPS} != {e.value for e in ReportEvent}:
    raise ImportError("HostState must hold exactly the server's steps and updater.wire.ReportEvent")


def state_of(event: ReportEvent) -> HostState:
    """The state a host is in after a report of ``event``."""
    return HostState(event.value)


# Reports that finish a counted update; the event is its outcome (but see below).
FINISHING = frozenset({ReportEvent.BLESSED, ReportEvent.ROLLED_BACK, ReportEvent.FAILED})
# States an update is finished in: the host may start another one from them.
RESTING = frozenset({HostState.IDLE} | {state_of(e) for e in FINISHING})
# Outcomes that count against a release for the automatic halt.
FAILURES = frozenset({state_of(ReportEvent.ROLLED_BACK), state_of(ReportEvent.FAILED)})
# The outcome of a rollback the agent could not explain (cause "unexplained"): the
# halt judges these by a threshold of their own.
UNEXPLAINED_ROLLBACK = "rolled_back_unexplained"

_FROM: dict[ReportEvent, frozenset[HostState]] = {
    ReportEvent.DOWNLOADING: RESTING | {HostState.OFFERED, HostState.DOWNLOADING},
    ReportEvent.STAGED: frozenset({HostState.DOWNLOADING, HostState.STAGED}),
    ReportEvent.REBOOTING: frozenset({HostState.STAGED, HostState.REBOOTING}),
    ReportEvent.BLESSED: frozenset({HostState.STAGED, HostState.REBOOTING}),
    ReportEvent.ROLLED_BACK: frozenset({HostState.STAGED, HostState.REBOOTING}),
    ReportEvent.FAILED: frozenset(HostState) - {HostState.FAILED},
}


class ReportRejected(ValueError):
    """A report that is replayed, out of order, or does not follow the host's state."""


def after_report(state: HostState, event: ReportEvent) -> HostState:
    if state not in _FROM[event]:
        raise ReportRejected(f"event '{event.value}' cannot follow state '{state.value}'")
    return state_of(event)


def after_offer(state: HostState) -> HostState:
    if state not in RESTING and state is not HostState.OFFERED:
        raise ReportRejected(f"cannot offer an update to a host in state '{state.value}'")
    return HostState.OFFERED


def outcome(event: ReportEvent, cause: RollbackCause | None) -> str:
    """What a finishing report makes of its counted update (the ``updates.outcome`` column)."""
    if event is ReportEvent.ROLLED_BACK and cause is RollbackCause.UNEXPLAINED:
        return UNEXPLAINED_ROLLBACK
    return event.value
