"""The update state machine walked along every path, and its file read across releases.

A host updated from the previous release boots the new agent, which reads the
state.json the old agent wrote; a host that falls back boots the old agent
again, which reads what the new one wrote. Both directions are tested here
with the old form as literal JSON and the old reader's key accesses.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from updater.agent import updatestate as u
from updater.version import Version

TARGET = u.Target("berth", "1.1", "ab" * 32, "b", "1.0")
TARGET_JSON = {"image_id": "berth", "version": "1.1", "roothash": "ab" * 32, "slot": "b", "from_version": "1.0"}

# Every transition, with the phases it may start from (all others must refuse it).
TRANSITIONS: dict[str, tuple[tuple[u.State, ...], Callable[[u.AgentState], u.AgentState]]] = {
    "start_writing": ((u.State.IDLE,), lambda s: u.start_writing(s, TARGET)),
    "record_progress": ((u.State.WRITING,), lambda s: u.record_progress(s, "root", u.Progress(10, 20))),
    "mark_written": ((u.State.WRITING,), u.mark_written),
    "mark_staged": ((u.State.WRITTEN,), lambda s: u.mark_staged(s, 50.0)),
    "mark_rebooting": ((u.State.STAGED, u.State.REBOOTING), u.mark_rebooting),
    "note_unblessed": ((u.State.REBOOTING,), lambda s: u.note_unblessed(s, 60.0)),
    "finish_blessed": ((u.State.REBOOTING,), u.finish_blessed),
    "finish_rolled_back": ((u.State.REBOOTING,), lambda s: u.finish_rolled_back(s, True)),
    "finish_unexplained": ((u.State.REBOOTING,), lambda s: u.finish_rolled_back(s, False)),
    "try_again": ((u.State.REBOOTING,), u.try_again),
    "abandon": ((u.State.WRITING, u.State.WRITTEN, u.State.STAGED), u.abandon),
    "lock_released": ((u.State.IDLE, u.State.STAGED), u.lock_released),
    "pre_reboot_started": ((u.State.STAGED,), u.pre_reboot_started),
    "back_in_service": ((u.State.IDLE, u.State.STAGED), u.back_in_service),
}


def previous_release_reads(data: dict[str, Any]) -> dict[str, Any]:
    """What the previous release's AgentState.from_json took from state.json, key by key
    (it required "state" and "seq", and defaulted every other key)."""
    target = data.get("target")
    return {
        "state": u.State(data["state"]),
        "seq": int(data["seq"]),
        "bad_versions": tuple(data.get("bad_versions", ())),
        "unexplained_versions": tuple(data.get("unexplained_versions", ())),
        "target": None if target is None else u.Target(**target),
        "progress": {role: u.Progress(**p) for role, p in data.get("progress", {}).items()},
        "lock_held": bool(data.get("lock_held", False)),
        "unblessed_since": data.get("unblessed_since"),
        "staged_at": data.get("staged_at"),
        "fallbacks": int(data.get("fallbacks", 0)),
    }


def _check_saved(state: u.AgentState) -> None:
    """What a power cut reads back is what was saved, by this release and the previous one."""
    data = json.loads(json.dumps(state.to_json()))
    assert u.AgentState.from_json(data) == state
    # The hooks' flag is a key of its own, there only when set (the previous release ignores it).
    assert data.get("post_bless_due", False) is state.post_bless_due
    assert ("post_bless_due" in data) is state.post_bless_due
    old = previous_release_reads(data)
    phase = state.phase
    assert (old["state"], old["seq"], old["lock_held"]) == (phase.name, state.seq, state.lock_held)
    # The previous release kept versions as text: each one's own text, as this release parsed it.
    assert old["bad_versions"] == tuple(map(str, state.bad_versions))
    assert old["unexplained_versions"] == tuple(map(str, state.unexplained_versions))
    assert old["target"] == (None if isinstance(phase, u.Idle) else phase.target)
    assert old["progress"] == (dict(phase.progress) if isinstance(phase, u.Writing) else {})
    if isinstance(phase, u.Staged | u.Rebooting):
        assert (old["staged_at"], old["fallbacks"]) == (phase.staged_at, phase.fallbacks)
    if isinstance(phase, u.Rebooting):
        assert old["unblessed_since"] == phase.unblessed_since


def test_every_path_of_the_state_machine() -> None:
    """From Idle, every sequence of transitions up to a length that reaches every
    phase twice over: each allowed one leads on (and is saved and read back whole),
    each other one is refused and changes nothing."""
    allowed_seen: set[tuple[u.State, str]] = set()
    refused_seen: set[tuple[u.State, str]] = set()
    paths = 0

    def walk(state: u.AgentState, depth: int) -> None:
        nonlocal paths
        _check_saved(state)
        if depth == 0:
            paths += 1
            return
        for name, (allowed, apply) in TRANSITIONS.items():
            if state.phase.name not in allowed:
                with pytest.raises(u.TransitionError, match=name.replace("unexplained", "rolled_back")):
                    apply(state)
                refused_seen.add((state.phase.name, name))
                continue
            after = apply(state)
            allowed_seen.add((state.phase.name, name))
            # The update's target stays the one it started with until it ends in Idle.
            if not isinstance(after.phase, u.Idle) and not isinstance(state.phase, u.Idle):
                assert after.phase.target == state.phase.target  # type: ignore[union-attr]
            assert after.seq == state.seq  # only next_seq moves it
            assert set(state.refused_versions) <= set(after.refused_versions)  # never forgotten
            walk(after, depth - 1)

    walk(u.AgentState(), 7)
    every = {(s, n) for s in u.State for n in TRANSITIONS}
    assert allowed_seen == {(s, n) for n, (allowed, _) in TRANSITIONS.items() for s in allowed}
    assert refused_seen == every - allowed_seen
    assert paths == 2599  # every path of length 7 from Idle: a change in the graph shows here


def test_a_whole_update_and_its_fallback_carry_their_data_along() -> None:
    state = u.start_writing(u.AgentState(seq=4, bad_versions=("0.9",)), TARGET)
    state = u.record_progress(state, "root", u.Progress(10, 20))
    state = u.record_progress(state, "verity", u.Progress(1, 2, resumed=True))
    assert state.phase == u.Writing(TARGET, {"root": u.Progress(10, 20), "verity": u.Progress(1, 2, True)})
    state = u.mark_staged(u.mark_written(state), 100.0)
    assert state.phase == u.Staged(TARGET, 100.0, 0)
    state = u.note_unblessed(u.mark_rebooting(state), 150.0)
    assert state.phase == u.Rebooting(TARGET, 100.0, 0, 150.0) and state.lock_held
    state = u.mark_rebooting(u.try_again(state))
    assert state.phase == u.Rebooting(TARGET, 100.0, 1, None)
    done = u.finish_blessed(state)
    assert (done.phase, done.lock_held, done.bad_versions, done.seq) == (u.Idle(), True, (Version.parse("0.9"),), 4)
    assert u.lock_released(done).lock_held is False


def test_the_hooks_flag_lasts_from_the_pre_reboot_hooks_to_the_host_back_in_service() -> None:
    staged = u.mark_staged(u.mark_written(u.start_writing(u.AgentState(), TARGET)), 100.0)
    due = u.pre_reboot_started(staged)
    assert due.post_bless_due and due.phase == staged.phase
    # Rebooting, a fallback's try again, a bless or a rollback: still due, until back in service.
    for after in (u.mark_rebooting(due), u.try_again(u.mark_rebooting(due)),
                  u.finish_blessed(u.mark_rebooting(due)), u.finish_rolled_back(u.mark_rebooting(due), True)):
        assert after.post_bless_due
    done = u.back_in_service(u.finish_blessed(u.mark_rebooting(due)))
    assert not done.post_bless_due and done.lock_held
    deferred = u.back_in_service(due)  # the pre-reboot hooks failed: the reboot waits
    # The lock was granted before the hooks ran: held until given back.
    assert deferred.lock_held and u.lock_released(deferred) == staged


# ---- the previous release's state.json, as it wrote it ----------------------------

OLD_FILES: dict[str, tuple[str, u.AgentState]] = {
    "idle-after-an-update": (
        ('{"state": "idle", "seq": 9, "bad_versions": ["0.9"], "unexplained_versions": ["1.0.5"], '
        '"target": null, "progress": {}, "lock_held": true, "unblessed_since": null, '
        '"staged_at": 1700000000.5, "fallbacks": 1}'),
        u.AgentState(u.Idle(), 9, ("0.9",), ("1.0.5",), lock_held=True),
    ),
    "writing-cut-short": (
        ('{"state": "writing", "seq": 1, "bad_versions": [], "unexplained_versions": [], '
        f'"target": {json.dumps(TARGET_JSON)}, "progress": {{"root": {{"wire_offset": 8388608, '
        '"installed_offset": 16777216, "resumed": false}}, "lock_held": false, '
        '"unblessed_since": null, "staged_at": null, "fallbacks": 0}'),
        u.AgentState(u.Writing(TARGET, {"root": u.Progress(8388608, 16777216)}), 1),
    ),
    "written": (
        ('{"state": "written", "seq": 1, "bad_versions": [], "unexplained_versions": [], '
        f'"target": {json.dumps(TARGET_JSON)}, "progress": {{"root": {{"wire_offset": 5, '
        '"installed_offset": 6, "resumed": true}}, "lock_held": false, "unblessed_since": null, '
        '"staged_at": null, "fallbacks": 0}'),
        u.AgentState(u.Written(TARGET), 1),
    ),
    "staged-again-after-a-fallback": (
        ('{"state": "staged", "seq": 5, "bad_versions": [], "unexplained_versions": [], '
        f'"target": {json.dumps(TARGET_JSON)}, "progress": {{}}, "lock_held": true, '
        '"unblessed_since": null, "staged_at": 1700000100.25, "fallbacks": 1}'),
        u.AgentState(u.Staged(TARGET, 1700000100.25, 1), 5, lock_held=True),
    ),
    "rebooting-unblessed": (
        ('{"state": "rebooting", "seq": 3, "bad_versions": [], "unexplained_versions": [], '
        f'"target": {json.dumps(TARGET_JSON)}, "progress": {{}}, "lock_held": true, '
        '"unblessed_since": 1700000200.0, "staged_at": 1700000100.25, "fallbacks": 0}'),
        u.AgentState(u.Rebooting(TARGET, 1700000100.25, 0, 1700000200.0), 3, lock_held=True),
    ),
}


@pytest.mark.parametrize("name", sorted(OLD_FILES))
def test_the_previous_releases_state_file_is_read(name: str) -> None:
    text, expected = OLD_FILES[name]
    assert u.AgentState.from_json(json.loads(text)) == expected


@pytest.mark.parametrize("name", sorted(OLD_FILES))
def test_the_new_form_names_only_the_phases_own_data(name: str) -> None:
    _, state = OLD_FILES[name]
    written = state.to_json()
    kinds = {u.State.IDLE: set(), u.State.WRITING: {"target", "progress"}, u.State.WRITTEN: {"target"},
             u.State.STAGED: {"target", "staged_at", "fallbacks"},
             u.State.REBOOTING: {"target", "staged_at", "fallbacks", "unblessed_since"}}
    host = {"state", "seq", "bad_versions", "unexplained_versions", "lock_held"}
    assert set(written) == host | kinds[state.phase.name]
    _check_saved(state)


@pytest.mark.parametrize("data, error", [
    ({"state": "staged", "seq": 1}, "without its target"),
    ({"state": "writing", "seq": 1, "target": None}, "without its target"),
    ({"state": "resting", "seq": 1}, "resting"),
    ({"state": "idle"}, "seq"),
])
def test_a_broken_state_file_is_refused_with_a_reason(data: dict[str, Any], error: str) -> None:
    with pytest.raises((TypeError, ValueError, KeyError), match=error):
        u.AgentState.from_json(data)
