"""The update decision as a pure function (updater.fleet.decision): no database, no server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from updater.fleet import decision as d
from updater.fleet.hoststate import RESTING, HostState
from updater.fleet.policy import Reason, ReleaseState
from updater.fleet.records import HostRow, RolloutRow
from updater.fleet.settings import FleetSettings, GroupPolicy, RateLimit, parse_settings
from updater.fleet.synthetic import synthetic_release
from updater.wire import UpdateCheck

RELEASE = synthetic_release("1.1.0")


def _settings(**group: Any) -> FleetSettings:
    return parse_settings(
        {"groups": {"g": {"waves": [{"after": "0s", "percent": 100}], **group}, "first": {}}},
        Path("."),
    )


def _group(**group: Any) -> tuple[GroupPolicy, Any]:
    settings = _settings(**group)
    policy = settings.groups["g"]
    return policy, settings.channels[policy.channel]


CHECK = UpdateCheck("n", "g", "1.0.0")
HOST = HostRow("n", "g", "1.0.0", HostState.IDLE, None, 3)
BEGUN = RolloutRow(100.0, None, None)


def test_an_unchanged_host_that_is_up_to_date_writes_nothing() -> None:
    policy, channel = _group()
    decision, effects = d.decide_update(CHECK, policy, channel, None, d.CheckView(HOST), 500.0)
    assert (decision.target, decision.reason, decision.slot) == (None, Reason.UP_TO_DATE.value, None)
    assert effects == ()


def test_a_new_or_changed_host_is_observed() -> None:
    policy, channel = _group()
    for host in (None, HostRow("n", "g", "0.9.0", HostState.IDLE, None, 3), HostRow("n", "x", "1.0.0", HostState.IDLE, None, 3)):
        _, effects = d.decide_update(CHECK, policy, channel, None, d.CheckView(host), 500.0)
        assert effects == (d.Observe("n", "g", "1.0.0"),)


def test_a_host_of_another_image_is_told_which_image_the_group_follows() -> None:
    policy, channel = _group()
    check = UpdateCheck("n", "g", "1.0.0", image_id="other")
    assert d.offered_release(check, channel, [RELEASE]) is None
    decision, _ = d.decide_update(check, policy, channel, None, d.CheckView(HOST), 0.0)
    assert decision.reason == f"group follows image {channel.image_id!r}"


def test_offered_release_is_the_newest_the_channel_allows() -> None:
    _, channel = _group()
    releases = [synthetic_release(v) for v in ("1.1.0", "1.2.0", "0.9.0")]
    assert d.offered_release(CHECK, channel, releases) == releases[1]
    assert d.offered_release(UpdateCheck("n", "g", "1.0.0", bad_versions=("1.2.0",)), channel, releases) == releases[0]


def test_a_release_begins_its_rollout_and_asks_for_a_slot() -> None:
    policy, channel = _group()
    decision, effects = d.decide_update(CHECK, policy, channel, RELEASE, d.CheckView(HOST), 500.0)
    slot = d.TakeSlot("g", "n", "1.1.0")
    assert effects == (d.BeginRollout("g", "1.1.0"), slot)
    assert decision == d.Decision("1.1.0", Reason.OFFERED.value, slot, None)


def test_a_group_that_waits_on_another_begins_after_its_soak() -> None:
    policy, channel = _group(after="first", soak="1h")
    view = d.CheckView(HOST, prerequisite=RolloutRow(0.0, 1000.0, None))
    decision, effects = d.decide_update(CHECK, policy, channel, RELEASE, view, 1000.0 + 3599)
    assert decision.reason == Reason.WAITING_FOR_GROUP.value and effects == ()
    decision, effects = d.decide_update(CHECK, policy, channel, RELEASE, view, 1000.0 + 3600)
    assert decision.reason == Reason.OFFERED.value and d.BeginRollout("g", "1.1.0") in effects
    unfinished = d.CheckView(HOST, prerequisite=RolloutRow(0.0, None, None))
    assert d.decide_update(CHECK, policy, channel, RELEASE, unfinished, 9e9)[0].reason == Reason.WAITING_FOR_GROUP.value


@pytest.mark.parametrize(
    ("view", "reason", "target"),
    [
        (d.CheckView(HOST, ReleaseState.PAUSED, BEGUN), Reason.PAUSED, None),
        (d.CheckView(HOST, ReleaseState.ABORTED, BEGUN), Reason.ABORTED, None),
        (d.CheckView(HOST, ReleaseState.WITHDRAWN, BEGUN), Reason.ABORTED, None),
        (d.CheckView(HOST, rollout=RolloutRow(100.0, None, "2 of 2 failed")), Reason.HALTED, None),
        # The host already started this update: it keeps going, paused or halted.
        (d.CheckView(HostRow("n", "g", "1.0.0", HostState.STAGED, "1.1.0", 3), ReleaseState.PAUSED, BEGUN), Reason.IN_PROGRESS, "1.1.0"),
    ],
)
def test_gates_answer_without_a_slot(view: d.CheckView, reason: Reason, target: str | None) -> None:
    policy, channel = _group()
    decision, effects = d.decide_update(CHECK, policy, channel, RELEASE, view, 500.0)
    assert (decision.target, decision.reason, decision.slot) == (target, reason.value, None)
    assert not any(isinstance(e, d.TakeSlot) for e in effects)


def test_a_wave_not_reached_yet_waits() -> None:
    policy, channel = _group(waves=[{"after": "1h", "percent": 100}])
    view = d.CheckView(HOST, rollout=BEGUN)
    assert d.decide_update(CHECK, policy, channel, RELEASE, view, 100.0 + 3599)[0].reason == Reason.WAITING_FOR_WAVE.value
    assert d.decide_update(CHECK, policy, channel, RELEASE, view, 100.0 + 3600)[0].slot is not None


RATE = RateLimit(max_updates=2, period_s=3600)


@pytest.mark.parametrize(
    ("view", "outcome"),
    [
        (d.SlotView(None, None, 0, 0), d.SlotOutcome.STARTED),
        (d.SlotView(HostState.BLESSED, None, 1, 1), d.SlotOutcome.STARTED),
        (d.SlotView(HostState.OFFERED, "1.0.5", 1, 1), d.SlotOutcome.STARTED),
        (d.SlotView(HostState.OFFERED, "1.1.0", 9, 9), d.SlotOutcome.ALREADY),
        (d.SlotView(HostState.IDLE, None, 2, 0), d.SlotOutcome.RATE_LIMITED),
        (d.SlotView(HostState.IDLE, None, 0, 2), d.SlotOutcome.RATE_LIMITED),
        (d.SlotView(HostState.STAGED, "1.0.5", 0, 0), d.SlotOutcome.BUSY),
        # Full and busy: the rate limit is judged first, as it always was.
        (d.SlotView(HostState.STAGED, "1.0.5", 2, 0), d.SlotOutcome.RATE_LIMITED),
    ],
)
def test_judge_slot(view: d.SlotView, outcome: d.SlotOutcome) -> None:
    assert d.judge_slot(view, "1.1.0", RATE) is outcome


@given(state=st.sampled_from([*HostState, None]), started=st.integers(0, 4), in_flight=st.integers(0, 4))
def test_a_started_slot_is_always_within_the_rate_and_from_rest(state: HostState | None, started: int, in_flight: int) -> None:
    outcome = d.judge_slot(d.SlotView(state, "1.0.5", started, in_flight), "1.1.0", RATE)
    if outcome is d.SlotOutcome.STARTED:
        assert started < 2 and in_flight < 2
        assert state is None or state in RESTING or state is HostState.OFFERED


def test_settle_turns_the_slot_into_the_answer() -> None:
    slot = d.TakeSlot("g", "n", "1.1.0")
    offered = d.Decision("1.1.0", Reason.OFFERED.value, slot, in_flight="1.0.5")
    assert d.settle(offered, d.SlotOutcome.STARTED) == ("1.1.0", "offered")
    assert d.settle(offered, d.SlotOutcome.ALREADY) == ("1.1.0", "offered")
    assert d.settle(offered, d.SlotOutcome.RATE_LIMITED) == (None, "rate_limited")
    assert d.settle(offered, d.SlotOutcome.BUSY) == ("1.0.5", "in_progress")
    plain = d.Decision(None, Reason.PAUSED.value)
    assert d.settle(plain, None) == (None, "paused")
