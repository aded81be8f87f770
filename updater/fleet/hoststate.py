"""A host's update state as the server sees it, moved only by allowed transitions.

``offered`` is the server's own step (a decision gave the host a target); the
rest follow the agent's reports (updater.wire.ReportEvent). A report whose
event may not follow the host's current state is refused and changes nothing.
"""

from __future__ import annotations

import enum

from updater.wire import ReportEvent


class HostState(enum.StrEnum):
    IDLE = "idle"
    OFFERED = "offered"
    DOWNLOADING = "downloading"
    STAGED = "staged"
    REBOOTING = "rebooting"
    BLESSED = "blessed"
    ROLLED_BACK = "rolled_back"
    FAILED = "failed"


# States an update is finished in: the host may start another one from them.
RESTING = frozenset({HostState.IDLE, HostState.BLESSED, HostState.ROLLED_BACK, HostState.FAILED})
# Outcomes that count against a release for the automatic halt.
FAILURES = frozenset({HostState.ROLLED_BACK, HostState.FAILED})
# The outcome of a rollback the agent could not explain (cause "unexplained"): the
# halt judges these by a threshold of their own.
UNEXPLAINED_ROLLBACK = "rolled_back_unexplained"
# Reports that finish a counted update; the event is its outcome (but see above).
FINISHING = frozenset({ReportEvent.BLESSED, ReportEvent.ROLLED_BACK, ReportEvent.FAILED})

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
    return HostState(event.value)


def after_offer(state: HostState) -> HostState:
    if state not in RESTING and state is not HostState.OFFERED:
        raise ReportRejected(f"cannot offer an update to a host in state '{state.value}'")
    return HostState.OFFERED
