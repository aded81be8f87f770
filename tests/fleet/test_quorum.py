"""The swarm managers' quorum in the reboot locks: a pure check (policy.quorum_allows),
the semaphore that applies it (locks.acquire), and the server that learns the roles
from the hosts' checks and refuses a pre-reboot that would break the quorum."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from updater.fleet import locks
from updater.fleet import policy as pol
from updater.fleet.decision import CheckView, ObserveRole, decide_update
from updater.fleet.settings import GroupPolicy, parse_settings
from updater.fleet.store import Store
from updater.wire import UpdateCheck, WireError

NODES = ("m1", "m2", "m3", "m4", "m5", "w1", "w2")


def majority(n: int) -> int:
    return n // 2 + 1


def test_every_case_up_to_five_managers_and_two_workers() -> None:
    """Each set of managers, each set of hosts down, each asker: allowed exactly when the
    managers left up keep their majority, or (one or two managers) no other is down."""
    for size in range(6):
        for managers in map(frozenset, itertools.combinations(NODES[:5], size)):
            for count in range(len(NODES) + 1):
                for down in map(frozenset, itertools.combinations(NODES, count)):
                    for node in NODES:
                        allowed = pol.quorum_allows(managers, down, node)
                        if node not in managers:
                            assert allowed
                            continue
                        others = (down & managers) - {node}
                        up = len(managers) - len(others) - 1
                        expected = (not others) if len(managers) < 3 else up >= majority(len(managers))
                        assert allowed is expected, (managers, down, node)


@given(
    st.integers(min_value=1, max_value=9),
    st.integers(min_value=1, max_value=9),
    st.lists(st.tuples(st.booleans(), st.integers(min_value=0, max_value=11)), max_size=60),
)
def test_no_sequence_of_locks_takes_a_swarm_below_its_majority(managers_n: int, slots: int,
                                                               ops: list[tuple[bool, int]]) -> None:
    """Any order of pre-reboots and steady-states by managers and workers, any number of
    reboot slots: the managers holding a slot never leave fewer than a majority up (with
    three or more managers), and never more than one of them down (with one or two)."""
    managers = frozenset(f"m{i}" for i in range(managers_n))
    nodes = sorted(managers) + ["w0", "w1"]
    holders: tuple[locks.Holder, ...] = ()
    for now, (take, pick) in enumerate(ops):
        node = nodes[pick % len(nodes)]
        result = (locks.acquire(holders, node, slots, 1e9, float(now), managers) if take
                  else locks.release(holders, node, float(now)))
        holders = result.holders
        down = {h.node_id for h in holders} & managers
        if managers_n >= 3:
            assert managers_n - len(down) >= majority(managers_n)
        else:
            assert len(down) <= 1


def test_a_refused_manager_is_told_quorum_and_a_renewal_is_never_refused() -> None:
    managers = frozenset({"m1", "m2", "m3"})
    held = locks.acquire((), "m1", 3, 60, 0, managers).holders
    refused = locks.acquire(held, "m2", 3, 60, 1, managers)
    assert refused.outcome is locks.LockOutcome.QUORUM and refused.holders == held
    assert locks.acquire(held, "w1", 3, 60, 1, managers).outcome is locks.LockOutcome.ACQUIRED
    assert locks.acquire(held, "m1", 3, 60, 2, managers).outcome is locks.LockOutcome.RENEWED
    # A full semaphore says full first (the quorum is only asked of a free slot).
    assert locks.acquire(held, "m2", 1, 60, 1, managers).outcome is locks.LockOutcome.FULL


def test_the_check_carries_the_role_and_an_old_body_is_unchanged() -> None:
    body = {"node_id": "m1", "group": "g", "current_version": "1.0"}
    assert UpdateCheck.from_json(body).swarm_role is None
    assert UpdateCheck.from_json(body).to_json().keys() == {*body, "image_id", "bad_versions"}
    check = UpdateCheck.from_json({**body, "swarm_role": "manager"})
    assert check.swarm_role == "manager" and UpdateCheck.from_json(check.to_json()) == check
    for bad in ("leader", 3, ""):
        try:
            UpdateCheck.from_json({**body, "swarm_role": bad})
        except WireError as error:
            assert "swarm_role" in str(error)
        else:
            raise AssertionError(f"{bad!r} accepted")


def _group(slots: int = 3) -> tuple[GroupPolicy, Any]:
    settings = parse_settings({"groups": {"g": {"max_concurrent_reboots": slots}, "h": {}}}, Path("."))
    return settings.groups["g"], settings.channels[settings.groups["g"].channel]


def test_a_check_keeps_the_role_only_when_it_changed() -> None:
    policy, channel = _group()
    check = UpdateCheck("m1", "g", "1.0", swarm_role="manager")
    _, effects = decide_update(check, policy, channel, None, CheckView(None), 0)
    assert ObserveRole("m1", "g", "manager") in effects
    _, effects = decide_update(check, policy, channel, None, CheckView(None, swarm=("g", "manager")), 0)
    assert not any(isinstance(e, ObserveRole) for e in effects)
    left = UpdateCheck("m1", "g", "1.0")
    _, effects = decide_update(left, policy, channel, None, CheckView(None, swarm=("g", "manager")), 0)
    assert ObserveRole("m1", "g", None) in effects
    moved = UpdateCheck("m1", "h", "1.0", swarm_role="manager")
    _, effects = decide_update(moved, policy, channel, None, CheckView(None, swarm=("g", "manager")), 0)
    assert ObserveRole("m1", "h", "manager") in effects


def test_the_store_learns_the_managers_from_checks_and_keeps_them_in_quorum(store: Store) -> None:
    """Three managers and a worker in one group with three reboot slots: the first
    manager gets one, the second is refused for the quorum (the worker is not), and
    once the first gave its slot back the second gets it."""
    policy, channel = _group(slots=3)
    for node, role in (("m1", "manager"), ("m2", "manager"), ("m3", "manager"), ("w1", "worker")):
        check = UpdateCheck(node, "g", "1.0", swarm_role=role)
        _, effects = decide_update(check, policy, channel, None, store.check_view_of_host(node), 0)
        store.apply_check(effects, policy, 0, 3600)
    assert store.swarm_managers("g") == {"m1", "m2", "m3"} and store.swarm_managers("h") == frozenset()
    assert store.swarm_role("w1") == ("g", "worker")
    clock = iter(range(1, 100)).__next__
    assert store.lock(policy, "m1", clock).outcome is locks.LockOutcome.ACQUIRED
    assert store.lock(policy, "m2", clock).outcome is locks.LockOutcome.QUORUM
    assert store.lock(policy, "w1", clock).outcome is locks.LockOutcome.ACQUIRED
    assert store.lock_holders("g", 10) == ["m1", "w1"]
    store.unlock(policy, "m1", clock)
    assert store.lock(policy, "m2", clock).outcome is locks.LockOutcome.ACQUIRED
    # A manager that leaves the swarm says so on its next check, and counts no more.
    _, effects = decide_update(UpdateCheck("m3", "g", "1.0"), policy, channel, None,
                               store.check_view_of_host("m3"), 20)
    store.apply_check(effects, policy, 20, 3600)
    assert store.swarm_managers("g") == {"m1", "m2"} and store.swarm_role("m3") is None
