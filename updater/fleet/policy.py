"""Rollout policy as pure functions: which release, waves, windows, rate, ordering, halt.

Nothing here touches the network, the disk or a clock: callers pass ``now``
(epoch seconds) and the counts they read in their transaction. The store and
the server apply the answers.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Collection, Iterable
from dataclasses import dataclass

from updater.eligibility import newest_eligible
from updater.fleet.settings import Channel, GroupPolicy, HaltRule, RateLimit, Wave
from updater.release import Release
from updater.window import window_open
from updater.wire import Version


class ReleaseState(enum.StrEnum):
    """What an operator (or the automatic halt) made of a release."""

    ACTIVE = "active"
    PAUSED = "paused"  # no new starts until resumed
    ABORTED = "aborted"  # no new starts, ever; in-flight updates finish
    WITHDRAWN = "withdrawn"  # never offered again, not even to hosts already started


# Which operator action may move a release from which state.
ADMIN_TRANSITIONS: dict[str, tuple[frozenset[ReleaseState], ReleaseState]] = {
    "pause": (frozenset({ReleaseState.ACTIVE}), ReleaseState.PAUSED),
    "resume": (frozenset({ReleaseState.PAUSED}), ReleaseState.ACTIVE),
    "abort": (frozenset({ReleaseState.ACTIVE, ReleaseState.PAUSED}), ReleaseState.ABORTED),
    "withdraw": (frozenset(ReleaseState) - {ReleaseState.WITHDRAWN}, ReleaseState.WITHDRAWN),
}


class ReleaseTransitionError(ValueError):
    """An operator action not allowed from the release's current state."""


def admin_transition(current: ReleaseState, action: str) -> ReleaseState:
    allowed, target = ADMIN_TRANSITIONS[action]
    if current not in allowed:
        raise ReleaseTransitionError(f"cannot {action} a release that is {current.value}")
    return target


def wave_place(node_id: str, version: str) -> float:
    """A host's place in [0, 1) for one release: re-drawn per release, stable per host."""
    digest = hashlib.sha256(f"{node_id}\0{version}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def wave_share(waves: Iterable[Wave], elapsed_s: float) -> float:
    """The share of the group allowed to have started ``elapsed_s`` after the rollout began."""
    reached = [w.percent for w in waves if w.after_s <= elapsed_s]
    return max(reached, default=0.0) / 100


def in_wave(node_id: str, version: str, waves: Iterable[Wave], elapsed_s: float) -> bool:
    return wave_place(node_id, version) < wave_share(waves, elapsed_s)


def rate_allows(started_in_period: int, in_flight: int, rate: RateLimit) -> bool:
    """Nebraska's rule: fewer than max_updates started in the period, and in flight."""
    return started_in_period < rate.max_updates and in_flight < rate.max_updates


def most_started_in_any_period(started_ats: Iterable[float], period_s: float) -> int:
    """The most starts in any window ``(t - period_s, t]``, the window rate_allows counts.

    The store counts ``started_at > now - period``; that count only grows at a
    start, so the busiest window ends at one, and it is found in one sorted pass.
    """
    times = sorted(started_ats)
    most = first = 0
    for last, end in enumerate(times):
        while first <= last and not times[first] > end - period_s:
            first += 1
        most = max(most, last - first + 1)
    return most


def most_in_flight(spans: Iterable[tuple[float, float | None]]) -> int:
    """The most updates in flight at once, each from its start until its finish (None: still going).

    An update finishing at the instant another starts is not counted with it.
    """
    spans = list(spans)
    edges = sorted([(s, 1) for s, _ in spans] + [(f, -1) for _, f in spans if f is not None])
    most = running = 0
    for _, step in edges:  # at one instant, -1 sorts before +1: finishes first
        running += step
        most = max(most, running)
    return most


def quorum_allows(managers: Collection[str], down: Collection[str], node_id: str) -> bool:
    """Whether ``node_id`` may take a reboot slot as far as its swarm's quorum goes.

    ``managers``: the group's swarm managers (their hosts said so on their checks);
    ``down``: the hosts holding a reboot slot now. Raft keeps a swarm only while a
    majority of its managers, floor(n/2)+1, is up: a manager may go down only if that
    many stay up without it. A swarm of one or two managers loses its quorum with any
    one of them down, so there one manager at a time may go (or none would ever update).
    A host that is no manager never counts.
    """
    if node_id not in managers:
        return True
    others_down = {m for m in down if m in managers and m != node_id}
    up_after = len(managers) - len(others_down) - 1
    if len(managers) < 3:
        return not others_down
    return up_after >= len(managers) // 2 + 1


def should_halt(started: int, failed: int, rule: HaltRule, unexplained: int = 0) -> bool:
    """``failed``: updates that failed or rolled back for a cause the agent saw (a failed
    check, a panic); ``unexplained``: rollbacks it could not explain, judged apart."""
    if started < rule.min_updates:
        return False
    return failed / started > rule.max_failure_share or unexplained / started > rule.max_unexplained_share


def may_start_after(prerequisite_finished_at: float | None, soak_s: float, now: float) -> bool:
    """A group that waits on another starts once that one finished plus the soak time."""
    return prerequisite_finished_at is not None and now >= prerequisite_finished_at + soak_s


def rollout_finished(hosts_in_group: int, hosts_on_release: int, hosts_failed: int) -> bool:
    """Every known host of the group is on the release or has finished failing with it."""
    return hosts_in_group > 0 and hosts_on_release + hosts_failed >= hosts_in_group


def choose_release(
    releases: Iterable[Release], channel: Channel, current: Version, refused: Collection[Version]
) -> Release | None:
    """The newest release of the channel a host on ``current`` may take, if any
    (the agent's own rule, updater.eligibility, with the channel's image and pin)."""
    return newest_eligible(releases, channel.image_id, current, refused, channel.pin)


class Reason(enum.StrEnum):
    UP_TO_DATE = "up_to_date"
    OFFERED = "offered"
    IN_PROGRESS = "in_progress"  # the host already started this update: keep going
    PAUSED = "paused"
    ABORTED = "aborted"
    HALTED = "halted"
    WAITING_FOR_GROUP = "waiting_for_group"
    OUTSIDE_WINDOW = "outside_window"
    WAITING_FOR_WAVE = "waiting_for_wave"
    RATE_LIMITED = "rate_limited"


@dataclass(frozen=True)
class RolloutView:
    """What the store knows of one release in one group when a host asks."""

    state: ReleaseState
    started_at: float | None  # None: this group's rollout has not begun
    halted_reason: str | None


@dataclass(frozen=True)
class Verdict:
    reason: Reason
    # Set when the host may go ahead, or (for NEEDS_SLOT) would, if the rate allows.
    target: str | None = None
    needs_slot: bool = False  # the caller must take a rate-limit slot in a transaction


def judge_start(
    policy: GroupPolicy,
    node_id: str,
    target: str,
    in_flight_target: str | None,
    rollout: RolloutView,
    now: float,
) -> Verdict:
    """Whether a host may start updating to ``target`` now, before the rate limit."""
    if rollout.state is ReleaseState.WITHDRAWN:
        return Verdict(Reason.ABORTED)
    if in_flight_target == target:
        return Verdict(Reason.IN_PROGRESS, target)
    if rollout.state is ReleaseState.PAUSED:
        return Verdict(Reason.PAUSED)
    if rollout.state is ReleaseState.ABORTED:
        return Verdict(Reason.ABORTED)
    if rollout.halted_reason is not None:
        return Verdict(Reason.HALTED)
    if rollout.started_at is None:
        return Verdict(Reason.WAITING_FOR_GROUP)
    if not window_open(policy.windows, policy.timezone, now):
        return Verdict(Reason.OUTSIDE_WINDOW)
    if not in_wave(node_id, target, policy.waves, now - rollout.started_at):
        return Verdict(Reason.WAITING_FOR_WAVE)
    return Verdict(Reason.OFFERED, target, needs_slot=True)


def rollout_may_begin(
    policy: GroupPolicy, prerequisite_finished_at: float | None, now: float
) -> bool:
    return policy.after is None or may_start_after(prerequisite_finished_at, policy.soak_s, now)
