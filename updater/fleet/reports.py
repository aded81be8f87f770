"""What one report does, as a pure function: the host's new row, its counted update's
outcome, and the automatic halt (or finish) of the release's rollout in the group.

The store reads a ``ReportView`` in the group's transaction, ``judge_report``
returns the ``ReportEffects``, and the store applies them in that transaction.
The rollout is judged on the counts as they stand once this report is applied,
worked out here from the counts read before it (``counts_after``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from updater.fleet.hoststate import (
    FAILURES,
    FINISHING,
    UNEXPLAINED_ROLLBACK,
    HostState,
    ReportRejected,
    after_report,
    outcome,
)
from updater.fleet.policy import rollout_finished, should_halt
from updater.fleet.records import HostRow
from updater.fleet.settings import HaltRule
from updater.wire import Report, ReportEvent

_FAILED_OUTCOMES = frozenset(s.value for s in FAILURES)


@dataclass(frozen=True)
class RolloutCounts:
    """One release in one group: its counted updates, and the group's known hosts."""

    started: int
    failed: int  # failed, or rolled back for a cause the agent saw
    unexplained: int  # rolled back for no cause the agent saw
    hosts_in_group: int
    hosts_on_release: int


@dataclass(frozen=True)
class ReportView:
    """Read in the group's transaction, before the report is applied."""

    host: HostRow | None
    counts: RolloutCounts  # of the report's version in the group
    open_updates: int  # the node's unfinished counted updates of that version in the group


@dataclass(frozen=True)
class Halt:
    reason: str


@dataclass(frozen=True)
class FinishRollout:
    pass


@dataclass(frozen=True)
class ReportEffects:
    host: HostRow  # the host's row after the report (upserted, in the report's group)
    outcome: str | None  # set when the report finishes the node's counted update of its version
    rollout: Halt | FinishRollout | None  # what becomes of the rollout (only judged on a finish)


def judge_report(report: Report, group: str, rule: HaltRule, view: ReportView) -> ReportEffects:
    """The effects of ``report`` from a host in ``group``; ReportRejected if it may not apply."""
    host = view.host or HostRow(
        report.node_id, report.group, report.from_version, HostState.IDLE, None, -1
    )
    if report.seq <= host.last_seq:
        raise ReportRejected(
            f"report seq {report.seq} is not after the last one ({host.last_seq}):"
            " replayed or out of order"
        )
    state = after_report(host.state, report.event)
    finished = report.event in FINISHING
    after = HostRow(
        report.node_id,
        group,
        report.version if report.event is ReportEvent.BLESSED else report.from_version,
        state,
        None if finished else report.version,
        report.seq,
    )
    if not finished:
        return ReportEffects(after, None, None)
    result = outcome(report.event, report.cause)
    counts = counts_after(view, after, report.version, result)
    return ReportEffects(after, result, judge_rollout(counts, rule))


def counts_after(view: ReportView, after: HostRow, version: str, result: str) -> RolloutCounts:
    """The counts of ``version`` once the host's row is ``after`` and its open updates of
    that version in the group finished as ``result``."""
    counts, before = view.counts, view.host
    was_in_group = before is not None and before.group == after.group
    was_on_release = was_in_group and before is not None and before.version == version
    return replace(
        counts,
        failed=counts.failed + (view.open_updates if result in _FAILED_OUTCOMES else 0),
        unexplained=counts.unexplained
        + (view.open_updates if result == UNEXPLAINED_ROLLBACK else 0),
        hosts_in_group=counts.hosts_in_group + (0 if was_in_group else 1),
        hosts_on_release=counts.hosts_on_release
        - int(was_on_release)
        + int(after.version == version),
    )


def judge_rollout(counts: RolloutCounts, rule: HaltRule) -> Halt | FinishRollout | None:
    """Halt a release that fails too often; a rollout every host is through is finished."""
    if should_halt(counts.started, counts.failed, rule, counts.unexplained):
        unexplained = (
            f", {counts.unexplained} rolled back for no cause seen" if counts.unexplained else ""
        )
        return Halt(f"{counts.failed} of {counts.started} updates failed or rolled back{unexplained}")
    if rollout_finished(counts.hosts_in_group, counts.hosts_on_release, counts.failed + counts.unexplained):
        return FinishRollout()
    return None
