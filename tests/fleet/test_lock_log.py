"""The reboot-lock log: which events an operation produced (pure), and the store keeping them."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from updater.fleet import locks
from updater.fleet.locks import Holder, LockEvent, LockEventKind, LockOutcome, Peak
from updater.fleet.settings import GroupPolicy, parse_settings
from updater.fleet.store import Store

GRANTED, RENEWED, RELEASED, EXPIRED = (
    LockEventKind.GRANTED,
    LockEventKind.RENEWED,
    LockEventKind.RELEASED,
    LockEventKind.EXPIRED,
)


def events(
    before: tuple[Holder, ...], result: locks.LockResult, now: float
) -> list[tuple[str, str]]:
    return [(e.node_id, e.kind.value) for e in locks.lock_events(before, result, now)]


# --- which events one operation produced ---


def test_a_new_holder_is_granted() -> None:
    result = locks.acquire((), "a", 1, 60, 0)
    assert events((), result, 0) == [("a", "granted")]


def test_asking_again_renews_and_giving_back_releases() -> None:
    held = locks.acquire((), "a", 1, 60, 0).holders
    assert events(held, locks.acquire(held, "a", 1, 60, 10), 10) == [("a", "renewed")]
    assert events(held, locks.release(held, "a", 20), 20) == [("a", "released")]


def test_refusals_and_strangers_log_nothing() -> None:
    held = locks.acquire((), "a", 1, 60, 0).holders
    full = locks.acquire(held, "b", 1, 60, 5)
    assert full.outcome is LockOutcome.FULL
    assert events(held, full, 5) == []
    assert events(held, locks.release(held, "b", 5), 5) == []


def test_an_expired_lease_is_logged_before_the_grant_that_takes_its_slot() -> None:
    held = locks.acquire((), "a", 1, 60, 0).holders
    assert events(held, locks.acquire(held, "b", 1, 60, 60), 60) == [
        ("a", "expired"),
        ("b", "granted"),
    ]


def test_a_holder_asking_after_its_lease_expired_gets_a_new_one() -> None:
    held = locks.acquire((), "a", 1, 60, 0).holders
    assert events(held, locks.acquire(held, "a", 1, 60, 61), 61) == [
        ("a", "expired"),
        ("a", "granted"),
    ]


def test_any_operation_drops_and_logs_expired_leases() -> None:
    held = (Holder("a", 0, 10), Holder("b", 5, 100))
    full = locks.acquire(held, "c", 1, 60, 50)
    assert full.outcome is LockOutcome.FULL
    assert events(held, full, 50) == [("a", "expired")]
    assert events(held, locks.release(held, "b", 50), 50) == [("a", "expired"), ("b", "released")]
    assert events(held, locks.release(held, "x", 50), 50) == [("a", "expired")]


operations = st.lists(
    st.tuples(st.sampled_from(["lock", "unlock"]), st.sampled_from("abcde"), st.floats(0, 40)),
    max_size=60,
)


@given(ops=operations, slots=st.integers(1, 4), ttl=st.sampled_from([30.0, 100.0]))
def test_replaying_the_log_gives_the_holders_and_never_more_than_the_slots(
    ops: list[tuple[str, str, float]], slots: int, ttl: float
) -> None:
    held: tuple[Holder, ...] = ()
    replayed: set[str] = set()
    log: list[tuple[float, str, LockEventKind]] = []
    most = 0
    now = 0.0
    for op, node, step in ops:
        now += step
        if op == "lock":
            result = locks.acquire(held, node, slots, ttl, now)
        else:
            result = locks.release(held, node, now)
        produced = locks.lock_events(held, result, now)
        kinds = {e.kind for e in produced if e.node_id == node}
        # The outcome the client sees and the log agree.
        assert (result.outcome is LockOutcome.ACQUIRED) == (GRANTED in kinds)
        # A renewal is logged when it moved the lease (asking twice in one instant changes nothing).
        moved = {h.expires_at for h in held if h.node_id == node} != {
            h.expires_at for h in result.holders if h.node_id == node
        }
        assert (result.outcome is LockOutcome.RENEWED and moved) == (RENEWED in kinds)
        assert (result.outcome is LockOutcome.RELEASED) == (RELEASED in kinds)
        # Only the node asking is granted, renewed or released; others only expire.
        assert all(e.kind is EXPIRED for e in produced if e.node_id != node)
        assert all(h.expires_at <= now for h in held if LockEvent(h.node_id, EXPIRED) in produced)
        for event in produced:
            log.append((now, event.node_id, event.kind))
            if event.kind is GRANTED:
                assert event.node_id not in replayed
                replayed.add(event.node_id)
            elif event.kind in (RELEASED, EXPIRED):
                replayed.remove(event.node_id)
            assert len(replayed) <= slots
        held = result.holders
        assert replayed == {h.node_id for h in held}
        most = max(most, len(held))
    assert locks.most_held(log).count == most <= slots


def test_most_held_names_the_holders_the_first_time_the_peak_was_reached() -> None:
    log = [
        (1.0, "a", GRANTED),
        (2.0, "b", GRANTED),
        (3.0, "a", RELEASED),
        (4.0, "c", GRANTED),
        (5.0, "b", EXPIRED),
        (6.0, "c", RENEWED),
    ]
    assert locks.most_held(log) == Peak(2, ("a", "b"), 2.0)
    assert locks.most_held([]) == Peak(0, (), None)


def test_most_held_skips_drops_whose_grant_was_trimmed() -> None:
    log = [(1.0, "old", RELEASED), (2.0, "a", GRANTED), (3.0, "old", EXPIRED)]
    assert locks.most_held(log) == Peak(1, ("a",), 2.0)


# --- the store keeps the log, on SQLite and PostgreSQL ---


def policies(**groups: dict[str, object]) -> dict[str, GroupPolicy]:
    return dict(parse_settings({"groups": groups}, Path(".")).groups)


def at(now: float) -> Callable[[], float]:
    return lambda: now


def execute(url: str, sql: str) -> None:
    """One statement on a connection of its own, as another tool or an older berth would."""
    if url.startswith("sqlite:"):
        with contextlib.closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as conn:
            conn.execute(sql)
            conn.commit()
        return
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql)


def test_store_logs_every_lock_change_in_order_per_group(store: Store) -> None:
    groups = policies(default={"lock_ttl": "60s"}, other={"max_concurrent_reboots": 2})
    default, other = groups["default"], groups["other"]
    store.lock(default, "a", at(100.0))
    store.lock(other, "a", at(105.0))  # another group, another semaphore and log
    store.lock(default, "a", at(110.0))
    store.lock(default, "b", at(120.0))  # full: nothing changed, nothing logged
    store.unlock(default, "b", at(125.0))  # holds nothing: nothing logged
    store.unlock(default, "a", at(130.0))
    store.lock(default, "b", at(140.0))
    store.lock(default, "c", at(200.0))  # b's lease ran out at 200
    assert store.lock_log("default") == [
        {"at": 100.0, "node_id": "a", "event": "granted"},
        {"at": 110.0, "node_id": "a", "event": "renewed"},
        {"at": 130.0, "node_id": "a", "event": "released"},
        {"at": 140.0, "node_id": "b", "event": "granted"},
        {"at": 200.0, "node_id": "b", "event": "expired"},
        {"at": 200.0, "node_id": "c", "event": "granted"},
    ]
    assert store.lock_log("other") == [{"at": 105.0, "node_id": "a", "event": "granted"}]
    assert [e["at"] for e in store.lock_log("default", since=140.0)] == [140.0, 200.0, 200.0]
    assert store.lock_log("nobody") == []


def test_store_drops_events_older_than_the_retention(store: Store) -> None:
    policy = policies(default={"max_concurrent_reboots": 2, "lock_log_retention": "100s"})[
        "default"
    ]
    store.lock(policy, "a", at(0.0))
    store.unlock(policy, "a", at(10.0))
    store.lock(policy, "b", at(50.0))
    store.lock(policy, "c", at(60.0))
    store.unlock(policy, "b", at(150.0))  # keeps what happened from 50 s on
    assert [(e["node_id"], e["event"]) for e in store.lock_log("default")] == [
        ("b", "granted"),
        ("c", "granted"),
        ("b", "released"),
    ]
    # The semaphore itself is untouched by trimming: c still holds its slot.
    assert [h.node_id for h in store.lock(policy, "c", at(155.0)).holders] == ["c"]


def test_schema_creation_keeps_an_existing_database(db_url: str) -> None:
    policy = policies(default={"max_concurrent_reboots": 2})["default"]
    first = Store(db_url)
    first.lock(policy, "a", at(1.0))
    first.close()
    execute(db_url, "DROP TABLE lock_events")  # a database from before the lock log
    again = Store(db_url)
    try:
        Store(db_url).close()  # and opening an up-to-date one changes nothing
        result = again.lock(policy, "b", at(2.0))
        assert [h.node_id for h in result.holders] == ["a", "b"]
        assert again.lock_log("default") == [{"at": 2.0, "node_id": "b", "event": "granted"}]
    finally:
        again.close()
