"""FleetLock semantics as a pure function: a counting semaphore with owned, leased slots.

Re-entrant for the holder (a second pre-reboot renews the lease), release only
by the holder (a non-holder's release is a no-op, as the protocol's
UnlockIfHeld says), and a lease nobody renews expires after the group's TTL.
The store runs these inside a transaction over the group's rows and logs
what each one changed (``lock_events``); ``most_held`` replays that log.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass

from updater.fleet.policy import quorum_allows


@dataclass(frozen=True)
class Holder:
    node_id: str
    acquired_at: float
    expires_at: float


class LockOutcome(enum.StrEnum):
    ACQUIRED = "acquired"
    RENEWED = "renewed"  # the node already held a slot
    FULL = "full"
    QUORUM = "quorum"  # a slot is free, but a swarm manager going down now would break the quorum
    RELEASED = "released"
    NOT_HELD = "not_held"


@dataclass(frozen=True)
class LockResult:
    outcome: LockOutcome
    holders: tuple[Holder, ...]  # the semaphore after the operation


def live(holders: Iterable[Holder], now: float) -> tuple[Holder, ...]:
    return tuple(h for h in holders if h.expires_at > now)


def acquire(
    holders: Iterable[Holder], node_id: str, slots: int, ttl_s: float, now: float,
    managers: frozenset[str] = frozenset(),
) -> LockResult:
    """``managers``: the group's swarm managers, kept in quorum (policy.quorum_allows)."""
    current = live(holders, now)
    others = tuple(h for h in current if h.node_id != node_id)
    mine = [h for h in current if h.node_id == node_id]
    if mine:
        renewed = Holder(node_id, mine[0].acquired_at, now + ttl_s)
        return LockResult(LockOutcome.RENEWED, (*others, renewed))
    if len(current) >= slots:
        return LockResult(LockOutcome.FULL, current)
    if not quorum_allows(managers, {h.node_id for h in current}, node_id):
        return LockResult(LockOutcome.QUORUM, current)
    return LockResult(LockOutcome.ACQUIRED, (*current, Holder(node_id, now, now + ttl_s)))


def release(holders: Iterable[Holder], node_id: str, now: float) -> LockResult:
    current = live(holders, now)
    remaining = tuple(h for h in current if h.node_id != node_id)
    outcome = LockOutcome.RELEASED if len(remaining) < len(current) else LockOutcome.NOT_HELD
    return LockResult(outcome, remaining)


# --- the lock log: what an operation changed, and what the log proves ---


class LockEventKind(enum.StrEnum):
    GRANTED = "granted"  # a new lease
    RENEWED = "renewed"  # the holder asked again and its lease was extended
    RELEASED = "released"  # the holder gave its lease back
    EXPIRED = "expired"  # a lease past its TTL, dropped by the operation that found it


# Order within one operation: every drop before any grant, so a replay of the
# log in order never counts a freed slot and its new holder at the same time.
_EVENT_ORDER = {
    LockEventKind.EXPIRED: 0,
    LockEventKind.RELEASED: 1,
    LockEventKind.RENEWED: 2,
    LockEventKind.GRANTED: 3,
}


@dataclass(frozen=True)
class LockEvent:
    node_id: str
    kind: LockEventKind


def lock_events(before: Iterable[Holder], result: LockResult, now: float) -> tuple[LockEvent, ...]:
    """The events that turned ``before`` into ``result.holders`` (a lease is its node and grant time).

    Only changes are events: a holder asking again within the same instant renews nothing.
    """
    before = tuple(before)
    lease = {(h.node_id, h.acquired_at): h for h in result.holders}
    known = {(h.node_id, h.acquired_at) for h in before}
    events = [
        LockEvent(
            h.node_id, LockEventKind.EXPIRED if h.expires_at <= now else LockEventKind.RELEASED
        )
        for h in before
        if (h.node_id, h.acquired_at) not in lease
    ]
    events += [
        LockEvent(h.node_id, LockEventKind.RENEWED)
        for h in before
        if (h.node_id, h.acquired_at) in lease
        and lease[h.node_id, h.acquired_at].expires_at != h.expires_at
    ]
    events += [
        LockEvent(h.node_id, LockEventKind.GRANTED)
        for h in result.holders
        if (h.node_id, h.acquired_at) not in known
    ]
    return tuple(sorted(events, key=lambda e: (_EVENT_ORDER[e.kind], e.node_id)))


@dataclass(frozen=True)
class Peak:
    count: int  # the most leases held at once
    holders: tuple[str, ...]  # who held them, the first time that many were held
    at: float | None  # when (None: the log holds no grant)


def most_held(events: Iterable[tuple[float, str, LockEventKind]]) -> Peak:
    """Replay a group's log (``(at, node_id, kind)`` in order) for the most leases held at once.

    A drop whose grant is no longer in the log (trimmed by retention) is skipped,
    so a trimmed log can only under-count leases granted before its first event.
    """
    held: list[str] = []
    peak = Peak(0, (), None)
    for at, node_id, kind in events:
        if kind is LockEventKind.GRANTED and node_id not in held:
            held.append(node_id)
            if len(held) > peak.count:
                peak = Peak(len(held), tuple(held), at)
        elif kind in (LockEventKind.RELEASED, LockEventKind.EXPIRED) and node_id in held:
            held.remove(node_id)
    return peak
