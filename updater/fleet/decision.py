"""The update decision as a pure function: ``decide_update(check, …, view, now) → (decision, effects)``.

python-tuf style: the store reads a frozen ``CheckView`` for the release the
catalog offers, this module says what to answer and which ``Effect`` values the
store must apply (in one transaction), and the store reports back how the one
effect that can fail went (``TakeSlot``: the rate limit is judged under the
group's lock, by ``judge_slot``), which ``settle`` turns into the answer.
Nothing here touches the network, the disk or a clock.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass

from updater.fleet import policy as pol
from updater.fleet.hoststate import HostState, ReportRejected, after_offer
from updater.fleet.records import HostRow, RolloutRow
from updater.fleet.settings import Channel, GroupPolicy, RateLimit
from updater.release import Release
from updater.wire import UpdateCheck


def offered_release(check: UpdateCheck, channel: Channel, releases: Iterable[Release]) -> Release | None:
    """The release the group's channel offers this host, if any (the store reads the view for it)."""
    if check.image_id != channel.image_id:
        return None
    return pol.choose_release(releases, channel, check.current, check.refused)


@dataclass(frozen=True)
class CheckView:
    """What the store knows, in one read, when a host asks (no release: only ``host`` is read)."""

    host: HostRow | None
    release_state: pol.ReleaseState = pol.ReleaseState.ACTIVE
    rollout: RolloutRow | None = None  # this group's rollout of the release
    prerequisite: RolloutRow | None = None  # the rollout of the group this one waits on
    swarm: tuple[str, str] | None = None  # the (group, swarm role) kept for the host


# --- effects: what the store applies ---


@dataclass(frozen=True)
class Observe:
    """Record a host that asked, or its new group or version."""

    node_id: str
    group: str
    version: str


@dataclass(frozen=True)
class BeginRollout:
    group: str
    version: str


@dataclass(frozen=True)
class TakeSlot:
    """Start a counted update if the group's rate limit has room (judged under its lock)."""

    group: str
    node_id: str
    version: str


@dataclass(frozen=True)
class ObserveRole:
    """Keep the host's swarm role in its group (None: it is in no swarm now)."""

    node_id: str
    group: str
    role: str | None


Effect = Observe | ObserveRole | BeginRollout | TakeSlot


@dataclass(frozen=True)
class Decision:
    """The answer to a check, before the rate limit (``slot``: it stands only if that has room)."""

    target: str | None
    reason: str
    slot: TakeSlot | None = None
    in_flight: str | None = None  # the host's current target: kept if it is busy with it


def decide_update(
    check: UpdateCheck,
    policy: GroupPolicy,
    channel: Channel,
    release: Release | None,
    view: CheckView,
    now: float,
) -> tuple[Decision, tuple[Effect, ...]]:
    effects: list[Effect] = []
    host = view.host
    # Write the host only when it is new or changed: most checks then read and never write.
    if host is None or host.version != check.current_version or host.group != check.group:
        effects.append(Observe(check.node_id, check.group, check.current_version))
    said = (check.group, check.swarm_role) if check.swarm_role else None
    if said != view.swarm:
        effects.append(ObserveRole(check.node_id, check.group, check.swarm_role))
    if release is None:
        reason = (
            pol.Reason.UP_TO_DATE.value
            if check.image_id == channel.image_id
            else f"group follows image {channel.image_id!r}"
        )
        return Decision(None, reason), tuple(effects)
    rollout = view.rollout
    if rollout is None and pol.rollout_may_begin(
        policy, view.prerequisite.finished_at if view.prerequisite else None, now
    ):
        # Another process may begin it a moment earlier; the store keeps the first.
        effects.append(BeginRollout(policy.name, release.version))
        rollout = RolloutRow(now, None, None)
    gate = pol.RolloutView(
        state=view.release_state,
        started_at=rollout.started_at if rollout else None,
        halted_reason=rollout.halted_reason if rollout else None,
    )
    in_flight = host.target if host else None
    verdict = pol.judge_start(policy, check.node_id, release.version, in_flight, gate, now)
    if not verdict.needs_slot:
        return Decision(verdict.target, verdict.reason.value), tuple(effects)
    slot = TakeSlot(policy.name, check.node_id, release.version)
    effects.append(slot)
    return Decision(verdict.target, verdict.reason.value, slot, in_flight), tuple(effects)


# --- the rate limit's slot, judged under the group's lock ---


class SlotOutcome(enum.StrEnum):
    STARTED = "started"  # counted now
    ALREADY = "already"  # another request (or process) already started it
    RATE_LIMITED = "rate_limited"
    BUSY = "busy"  # the host is midway through another update


@dataclass(frozen=True)
class SlotView:
    """Read in the group's transaction: the host's state and target, the group's counts."""

    state: HostState | None  # None: the host is not known
    target: str | None
    started_in_period: int
    in_flight: int


def judge_slot(view: SlotView, version: str, rate: RateLimit) -> SlotOutcome:
    if view.target == version:
        return SlotOutcome.ALREADY
    if not pol.rate_allows(view.started_in_period, view.in_flight, rate):
        return SlotOutcome.RATE_LIMITED
    try:
        after_offer(view.state or HostState.IDLE)
    except ReportRejected:
        return SlotOutcome.BUSY
    return SlotOutcome.STARTED


def settle(decision: Decision, slot: SlotOutcome | None) -> tuple[str | None, str]:
    """The (target, reason) to answer, once the store said how the decision's slot went."""
    if decision.slot is None or slot in (SlotOutcome.STARTED, SlotOutcome.ALREADY):
        return decision.target, decision.reason
    if slot is SlotOutcome.BUSY:
        # The host is midway through another update; let it finish that one first.
        return decision.in_flight, pol.Reason.IN_PROGRESS.value
    return None, pol.Reason.RATE_LIMITED.value
