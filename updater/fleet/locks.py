"""FleetLock semantics as a pure function: a counting semaphore with owned, leased slots.

Re-entrant for the holder (a second pre-reboot renews the lease), release only
by the holder (a non-holder's release is a no-op, as the protocol's
UnlockIfHeld says), and a lease nobody renews expires after the group's TTL.
The store runs these inside a transaction over the group's rows.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Holder:
    node_id: str
    acquired_at: float
    expires_at: float


class LockOutcome(enum.StrEnum):
    ACQUIRED = "acquired"
    RENEWED = "renewed"  # the node already held a slot
    FULL = "full"
    RELEASED = "released"
    NOT_HELD = "not_held"


@dataclass(frozen=True)
class LockResult:
    outcome: LockOutcome
    holders: tuple[Holder, ...]  # the semaphore after the operation


def live(holders: Iterable[Holder], now: float) -> tuple[Holder, ...]:
    return tuple(h for h in holders if h.expires_at > now)


def acquire(
    holders: Iterable[Holder], node_id: str, slots: int, ttl_s: float, now: float
) -> LockResult:
    current = live(holders, now)
    others = tuple(h for h in current if h.node_id != node_id)
    mine = [h for h in current if h.node_id == node_id]
    if mine:
        renewed = Holder(node_id, mine[0].acquired_at, now + ttl_s)
        return LockResult(LockOutcome.RENEWED, (*others, renewed))
    if len(current) >= slots:
        return LockResult(LockOutcome.FULL, current)
    return LockResult(LockOutcome.ACQUIRED, (*current, Holder(node_id, now, now + ttl_s)))


def release(holders: Iterable[Holder], node_id: str, now: float) -> LockResult:
    current = live(holders, now)
    remaining = tuple(h for h in current if h.node_id != node_id)
    outcome = LockOutcome.RELEASED if len(remaining) < len(current) else LockOutcome.NOT_HELD
    return LockResult(outcome, remaining)
