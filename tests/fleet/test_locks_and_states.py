"""Reboot-lock semantics and the host state machine, without network or disk."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from updater.fleet import locks
from updater.fleet.hoststate import HostState, ReportRejected, after_offer, after_report
from updater.fleet.locks import LockOutcome
from updater.wire import ReportEvent


def test_semaphore_fills_then_refuses_and_frees_on_release() -> None:
    held: tuple[locks.Holder, ...] = ()
    for node in ("a", "b"):
        result = locks.acquire(held, node, 2, 60, 0)
        assert result.outcome is LockOutcome.ACQUIRED
        held = result.holders
    assert locks.acquire(held, "c", 2, 60, 1).outcome is LockOutcome.FULL
    held = locks.release(held, "a", 2).holders
    assert locks.acquire(held, "c", 2, 60, 3).outcome is LockOutcome.ACQUIRED


def test_lock_is_re_entrant_for_its_holder_and_renews_the_lease() -> None:
    held = locks.acquire((), "a", 1, 60, 0).holders
    again = locks.acquire(held, "a", 1, 60, 30)
    assert again.outcome is LockOutcome.RENEWED
    assert again.holders == (locks.Holder("a", 0, 90),)


def test_only_the_holder_releases_and_a_stranger_changes_nothing() -> None:
    held = locks.acquire((), "a", 1, 60, 0).holders
    stranger = locks.release(held, "b", 1)
    assert stranger.outcome is LockOutcome.NOT_HELD
    assert stranger.holders == held


def test_an_unreleased_lock_expires_after_its_ttl() -> None:
    held = locks.acquire((), "a", 1, 60, 0).holders
    assert locks.acquire(held, "b", 1, 60, 59.9).outcome is LockOutcome.FULL
    assert locks.acquire(held, "b", 1, 60, 60).outcome is LockOutcome.ACQUIRED


operations = st.lists(
    st.tuples(st.sampled_from(["lock", "unlock"]), st.sampled_from("abcdef"), st.floats(0, 50)),
    max_size=60,
)


@given(ops=operations, slots=st.integers(1, 4))
def test_never_more_live_holders_than_slots(ops: list[tuple[str, str, float]], slots: int) -> None:
    held: tuple[locks.Holder, ...] = ()
    now = 0.0
    for op, node, step in ops:
        now += step
        result = (
            locks.acquire(held, node, slots, 100, now)
            if op == "lock"
            else locks.release(held, node, now)
        )
        held = result.holders
        assert len(locks.live(held, now)) <= slots
        assert len({h.node_id for h in held}) == len(held)


def test_a_whole_update_walks_the_states() -> None:
    state = after_offer(HostState.IDLE)
    for event in (
        ReportEvent.DOWNLOADING,
        ReportEvent.STAGED,
        ReportEvent.REBOOTING,
        ReportEvent.BLESSED,
    ):
        state = after_report(state, event)
    assert state is HostState.BLESSED
    assert after_offer(state) is HostState.OFFERED  # ready for the next release


@pytest.mark.parametrize(
    ("state", "event"),
    [
        (HostState.IDLE, ReportEvent.BLESSED),
        (HostState.OFFERED, ReportEvent.REBOOTING),
        (HostState.DOWNLOADING, ReportEvent.BLESSED),
        (HostState.BLESSED, ReportEvent.ROLLED_BACK),
        (HostState.FAILED, ReportEvent.FAILED),
    ],
)
def test_out_of_order_events_are_refused(state: HostState, event: ReportEvent) -> None:
    with pytest.raises(ReportRejected):
        after_report(state, event)


def test_no_new_offer_while_an_update_is_under_way() -> None:
    with pytest.raises(ReportRejected):
        after_offer(HostState.STAGED)


def test_host_states_are_the_server_steps_and_the_report_events() -> None:
    from updater.fleet.hoststate import SERVER_STEPS, state_of

    assert {state_of(e).value for e in ReportEvent} == {e.value for e in ReportEvent}
    assert set(HostState) == SERVER_STEPS | {state_of(e) for e in ReportEvent}
    assert SERVER_STEPS == {HostState.IDLE, HostState.OFFERED}
