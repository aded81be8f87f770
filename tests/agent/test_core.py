"""The agent's pure core: every state transition, release choice, slot rules, boot entries."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from updater.agent import updatestate as m
from updater.agent.boundaries import ServerFleet, Standalone
from updater.agent.entries import boot_order, parse_entries
from updater.agent.policy import (
    AfterReboot,
    Window,
    after_reboot,
    boot_blessed,
    choose_release,
    may_write_slot,
    plan_uki,
    removed_after_bless,
    removed_after_fallback,
    slot_fits,
    stale_entries,
    waits_for_window,
)
from updater.agent.slots import Slot
from updater.contract import EMPTY_LABEL, BootEntry, uki_filename
from updater.gpt import Partition
from updater.release import Release
from updater.version import Version

V = Version.parse  # the pure core takes versions as parsed where they entered

TARGET = m.Target("berth", "1.1", "ab" * 32, "b", "1.0")

# One state of each phase, as the agent reaches it.
PHASES: dict[m.State, m.Phase] = {
    m.State.IDLE: m.Idle(),
    m.State.WRITING: m.Writing(TARGET),
    m.State.WRITTEN: m.Written(TARGET),
    m.State.STAGED: m.Staged(TARGET, staged_at=50.0),
    m.State.REBOOTING: m.Rebooting(TARGET, staged_at=50.0),
}


def _in(state: m.State) -> m.AgentState:
    return m.AgentState(phase=PHASES[state])


# transition -> (states it may start from, the state it leads to; None: the one it started from)
TRANSITIONS = {
    "start_writing": ((m.State.IDLE,), m.State.WRITING, lambda s: m.start_writing(s, TARGET)),
    "record_progress": ((m.State.WRITING,), m.State.WRITING,
                        lambda s: m.record_progress(s, "root", m.Progress(10, 20))),
    "mark_written": ((m.State.WRITING,), m.State.WRITTEN, m.mark_written),
    "mark_staged": ((m.State.WRITTEN,), m.State.STAGED, lambda s: m.mark_staged(s, 50.0)),
    "mark_rebooting": ((m.State.STAGED, m.State.REBOOTING), m.State.REBOOTING, m.mark_rebooting),
    "note_unblessed": ((m.State.REBOOTING,), m.State.REBOOTING, lambda s: m.note_unblessed(s, 5.0)),
    "finish_blessed": ((m.State.REBOOTING,), m.State.IDLE, m.finish_blessed),
    "finish_rolled_back": ((m.State.REBOOTING,), m.State.IDLE, lambda s: m.finish_rolled_back(s, True)),
    "try_again": ((m.State.REBOOTING,), m.State.STAGED, m.try_again),
    "abandon": ((m.State.WRITING, m.State.WRITTEN, m.State.STAGED), m.State.IDLE, m.abandon),
    "lock_released": ((m.State.IDLE, m.State.STAGED), None, m.lock_released),
    "pre_reboot_started": ((m.State.STAGED,), m.State.STAGED, m.pre_reboot_started),
    "back_in_service": ((m.State.IDLE, m.State.STAGED), None, m.back_in_service),
}


@pytest.mark.parametrize("name", sorted(TRANSITIONS))
@pytest.mark.parametrize("start", list(m.State))
def test_every_transition_from_every_state(name: str, start: m.State) -> None:
    allowed, leads_to, apply = TRANSITIONS[name]
    before = _in(start)
    if start in allowed:
        after = apply(before)
        assert after.phase.name == (leads_to or start)
        # what a power cut reads back is what was saved
        assert m.AgentState.from_json(after.to_json()) == after
    else:
        with pytest.raises(m.TransitionError, match=name):
            apply(before)


def test_rollback_remembers_the_version_once_and_seq_only_grows() -> None:
    state = m.AgentState(phase=m.Rebooting(TARGET, 0.0), bad_versions=("1.1",), seq=7)
    after = m.finish_rolled_back(state, explained=True)
    assert after.bad_versions == (V("1.1"),) and after.phase == m.Idle()
    assert m.next_seq(after).seq == 8


def test_only_an_explained_rollback_makes_a_version_bad_for_good() -> None:
    staged = m.mark_staged(m.AgentState(phase=m.Written(TARGET)), 10.0)
    again = m.mark_rebooting(m.try_again(m.mark_rebooting(staged)))
    assert isinstance(again.phase, m.Rebooting)
    assert (again.phase.fallbacks, again.phase.staged_at) == (1, 10.0)  # panics are looked for since staging
    given_up = m.finish_rolled_back(again, explained=False)
    assert given_up.bad_versions == () and given_up.unexplained_versions == (TARGET.version,)
    assert given_up.refused_versions == (TARGET.version,) and given_up.phase == m.Idle()
    # A new write starts with neither the old staging time nor its fallbacks.
    assert m.start_writing(given_up, TARGET).phase == m.Writing(TARGET)
    assert m.mark_staged(m.mark_written(m.start_writing(given_up, TARGET)), 20.0).phase \
        == m.Staged(TARGET, staged_at=20.0, fallbacks=0)


def test_rebooting_again_restarts_the_bless_clock() -> None:
    waiting = m.note_unblessed(_in(m.State.REBOOTING), 100.0)
    assert isinstance(waiting.phase, m.Rebooting)
    assert m.note_unblessed(waiting, 200.0) == waiting and waiting.phase.unblessed_since == 100.0
    again = m.mark_rebooting(waiting).phase
    assert isinstance(again, m.Rebooting) and again.unblessed_since is None


def _release(version: str, *, withdrawn: bool = False, min_version: str | None = None,
             image_id: str = "berth") -> Release:
    return Release(image_id, version, "00" * 32, 1, 1, min_version, withdrawn, {})


RELEASES = [_release("1.0"), _release("1.1"), _release("1.2", withdrawn=True), _release("1.10"),
            _release("2.0", min_version="1.5"), _release("9.0", image_id="other")]


@pytest.mark.parametrize(
    "current, bad, wanted, expected, why",
    [
        ("1.0", (), None, "1.10", "newest"),  # numeric order, withdrawn and foreign skipped
        ("1.10", (), None, "2.0", "newest"),  # 2.0 only from 1.5 on
        ("2.0", (), None, None, "no release newer"),
        ("1.0", ("1.10",), None, "1.1", "newest"),  # never one that rolled back here
        ("1.1", (), "1.1", None, "not newer"),  # never the same or older
        ("1.1", (), "1.0", None, "not newer"),
        ("1.0", (), "1.2", None, "withdrawn"),
        ("1.0", (), "2.0", None, "needs at least 1.5"),
        ("1.0", (), "3.0", None, "does not hold"),  # the server cannot name an unsigned release
        ("1.0", (), "1.1", "1.1", "offered"),
    ],
)
def test_choose_release(current: str, bad: tuple[str, ...], wanted: str | None, expected: str | None,
                        why: str) -> None:
    release, reason = choose_release(RELEASES, "berth", V(current), tuple(map(V, bad)),
                                     None if wanted is None else V(wanted))
    assert (release.version if release else None) == expected
    assert why in reason


def test_only_the_inactive_slot_of_a_blessed_boot_may_be_written() -> None:
    assert may_write_slot("b", "a", True) is None
    assert "booted slot" in may_write_slot("a", "a", True)
    assert "not blessed" in may_write_slot("b", "a", False)


def test_boot_entries_parse_and_sort_like_systemd_boot() -> None:
    names = ["berth_1.9.efi", "berth_1.10+0-3.efi", "berth_1.10+2-1.efi", "berth_1.2+3.efi",
             "notes.txt", "berth_1.8+1-2.efi"]
    entries = parse_entries(names)
    assert len(entries) == 5
    order = [e.filename for e in boot_order(entries)]
    # 1.10 appears twice only in this synthetic list; the bad one sorts last
    assert order == ["berth_1.10+2-1.efi", "berth_1.9.efi", "berth_1.8+1-2.efi", "berth_1.2+3.efi",
                     "berth_1.10+0-3.efi"]
    # Trailing zeros: 1.1.0 is newer than 1.0.0 (and 1.0.1 than 1.0).
    trailing = parse_entries(["berth_1.0.0.efi", "berth_1.0.1.efi", "berth_1.1.0.efi", "berth_1.0.efi"])
    assert [e.version for e in boot_order(trailing)][:2] == ["1.1.0", "1.0.1"]
    counting = BootEntry.parse(uki_filename("berth", "1.2", 2))
    assert counting and (counting.tries_left, counting.tries_done, counting.blessed) == (2, 0, False)
    assert BootEntry.parse("my_image_1.2.efi").image_id == "my_image"  # type: ignore[union-attr]


def test_after_reboot_decisions() -> None:
    blessed = parse_entries(["berth_1.1.efi", "berth_1.0.efi"])
    trying = parse_entries(["berth_1.1+2-1.efi", "berth_1.0.efi"])
    exhausted = parse_entries(["berth_1.0.efi", "berth_1.1+0-3.efi"])
    assert after_reboot(V("1.1"), V("1.1"), blessed, None, 0, 60) == AfterReboot.BLESSED
    assert after_reboot(V("1.1"), V("1.1"), trying, None, 0, 60) == AfterReboot.WAIT_FOR_BLESS
    assert after_reboot(V("1.1"), V("1.1"), trying, 0.0, 59, 60) == AfterReboot.WAIT_FOR_BLESS
    assert after_reboot(V("1.1"), V("1.1"), trying, 0.0, 60, 60) == AfterReboot.REBOOT_AGAIN
    assert after_reboot(V("1.1"), V("1.0"), exhausted, None, 0, 60) == AfterReboot.ROLLED_BACK
    assert after_reboot(V("1.1"), V("1.0"), parse_entries(["berth_1.0.efi"]), None, 0, 60) == AfterReboot.ROLLED_BACK
    assert after_reboot(V("1.1"), V("1.0"), parse_entries(["berth_1.1+3.efi", "berth_1.0.efi"]), None, 0, 60) \
        == AfterReboot.REBOOT_PENDING
    assert boot_blessed(blessed, V("1.1")) and not boot_blessed(trying, V("1.1"))
    assert [e.version for e in stale_entries(parse_entries(["berth_1.0.efi", "berth_0.9.efi", "berth_1.1.efi"]),
                                             {V("1.1"), V("1.0")})] == ["0.9"]


@pytest.mark.parametrize(
    "window, hour, minute, inside",
    [("02:00-04:00", 2, 0, True), ("02:00-04:00", 4, 0, False), ("02:00-04:00", 1, 59, False),
     ("23:00-01:00", 23, 30, True), ("23:00-01:00", 0, 30, True), ("23:00-01:00", 1, 0, False)],
)
def test_maintenance_window(window: str, hour: int, minute: int, inside: bool) -> None:
    assert Window.parse(window).contains(datetime(2026, 1, 1, hour, minute, tzinfo=UTC)) is inside


@pytest.mark.parametrize("text", ["2-4", "25:00-01:00", "02:00", "02:00-04:00\n"])
def test_bad_window_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="maintenance window"):
        Window.parse(text)


# ---- the rules the agent's shell asks (policy.py) ------------------------------------


def _slot(root_bytes: int, verity_bytes: int) -> Slot:
    def part(index: int, size: int) -> Partition:
        return Partition(index, "t", "p", 2048, 2048 + size // 512 - 1, 0, EMPTY_LABEL)

    return Slot("b", part(3, root_bytes), part(4, verity_bytes))


@pytest.mark.parametrize("slot_size, verity_size, fits", [
    (16 << 20, 1 << 20, True),  # exactly the slot
    (8 << 20, 1 << 19, True),  # smaller
    ((16 << 20) + 512, 1 << 20, False),  # root one sector too big
    (16 << 20, (1 << 20) + 512, False),  # verity one sector too big
    (32 << 20, 2 << 20, False),
])
def test_a_release_fits_a_slot_only_when_both_images_do(slot_size: int, verity_size: int, fits: bool) -> None:
    release = Release("berth", "1.1", "00" * 32, slot_size, verity_size, None, False, {})
    why = slot_fits(release, _slot(16 << 20, 1 << 20))
    assert (why is None) is fits
    if not fits:
        assert why == f"needs slots of {slot_size}+{verity_size} bytes, slot b has {16 << 20}+{1 << 20}"


@pytest.mark.parametrize("names, signed, remove, install", [
    ([], set(), [], True),  # nothing there yet
    (["berth_1.1+3.efi"], {"berth_1.1+3.efi"}, [], False),  # installed before a cut
    (["berth_1.1+3.efi"], set(), ["berth_1.1+3.efi"], True),  # a cut left it short
    (["berth_1.1+1-2.efi", "berth_1.1+3.efi"], {"berth_1.1+3.efi"}, [], False),  # one good is enough
    (["berth_1.1+1-2.efi", "berth_1.1+3.efi"], set(), ["berth_1.1+1-2.efi", "berth_1.1+3.efi"], True),
    (["berth_1.0.efi", "berth_1.1.0+3.efi"], set(), ["berth_1.1.0+3.efi"], True),  # 1.1.0 is 1.1
    (["berth_1.0.efi"], {"berth_1.0.efi"}, [], True),  # another version's entry is not looked at
])
def test_plan_uki(names: list[str], signed: set[str], remove: list[str], install: bool) -> None:
    asked: list[str] = []

    def is_signed(entry: BootEntry) -> bool:
        asked.append(entry.filename)
        return entry.filename in signed

    plan = plan_uki(parse_entries(names), V("1.1"), is_signed)
    assert ([e.filename for e in plan.remove], plan.install) == (remove, install)
    assert all(BootEntry.parse(n).version in ("1.1", "1.1.0") for n in asked)  # type: ignore[union-attr]
    # No further than the first signed one: each answer reads a whole UKI.
    assert not signed & set(asked[:-1])


@pytest.mark.parametrize("names, booted, other, removed", [
    (["berth_1.1.efi", "berth_1.0.efi"], "1.1", "1.0", []),
    (["berth_1.1.efi", "berth_1.0.efi", "berth_0.9.efi"], "1.1", "1.0", ["berth_0.9.efi"]),
    (["berth_1.1.efi", "berth_1.0.efi"], "1.1", None, ["berth_1.0.efi"]),  # other slot empty
    (["berth_1.1.0.efi", "berth_1.0.efi"], "1.1", "1.0", []),  # same versions, other spelling
    (["berth_1.1.efi", "berth_1.0+0-3.efi"], "1.1", "1.0", []),  # a bad entry of a slot stays
])
def test_removed_after_bless_keeps_what_either_slot_can_boot(names: list[str], booted: str, other: str | None,
                                                             removed: list[str]) -> None:
    kept = removed_after_bless(parse_entries(names), V(booted), None if other is None else V(other))
    assert [e.filename for e in kept] == removed


def test_removed_after_fallback_is_every_entry_of_the_target() -> None:
    entries = parse_entries(["berth_1.0.efi", "berth_1.1+0-3.efi", "berth_1.1.0+1-2.efi", "berth_1.2+3.efi"])
    assert [e.filename for e in removed_after_fallback(entries, V("1.1"))] == ["berth_1.1+0-3.efi", "berth_1.1.0+1-2.efi"]
    assert removed_after_fallback(entries, V("2.0")) == []


@pytest.mark.parametrize("window, hour, waits", [
    (None, 12, False),  # a fleet server paces reboots: no window of the agent's own
    ("02:00-04:00", 3, False), ("02:00-04:00", 12, True), ("02:00-04:00", 4, True),
    ("23:00-01:00", 0, False), ("23:00-01:00", 22, True),
])
def test_waits_for_window(window: str | None, hour: int, waits: bool) -> None:
    moment = datetime(2026, 1, 1, hour, 0, tzinfo=UTC)
    assert waits_for_window(Window.parse(window) if window else None, moment) is waits


@pytest.mark.parametrize("text", ["02:00-04:00", "23:30-00:15", "00:00-00:00"])
def test_a_window_prints_as_it_was_written(text: str) -> None:
    assert str(Window.parse(text)) == text


def test_the_strategy_holds_the_window() -> None:
    assert Standalone(Window.parse("02:00-04:00")).reboot_window() == Window.parse("02:00-04:00")
    assert Standalone().reboot_window() is None
    server = ServerFleet("https://fleet.invalid", "n", "g", credential_file=Path("/nonexistent"))
    assert server.reboot_window() is None


def test_the_journal_says_when_the_reboot_lock_was_granted_and_given_back(
        capsys: pytest.CaptureFixture[str]) -> None:
    """Scenario 4 orders each host's lock against its drain and reboot from its journal."""
    from updater.client import FleetError

    class Client:
        def __init__(self, refuse: bool) -> None:
            self.refuse = refuse

        def pre_reboot(self) -> None:
            if self.refuse:
                raise FleetError("409 failed_swarm_quorum")

        def steady_state(self) -> None:
            pass

    server = ServerFleet("https://fleet.invalid", "n", "g", credential_file=Path("/nonexistent"))
    server._client = Client(refuse=False)  # type: ignore[assignment]
    assert server.take_reboot_lock() and server.release_reboot_lock()
    assert capsys.readouterr().err.splitlines() == ["berth-agent: info: reboot lock granted",
                                                    "berth-agent: info: reboot lock given back"]
    server._client = Client(refuse=True)  # type: ignore[assignment]
    assert not server.take_reboot_lock()
    assert "granted" not in capsys.readouterr().err.replace("not granted", "")


def test_a_host_kept_out_of_service_keeps_renewing_its_lock_and_says_when_it_cannot() -> None:
    from updater.agent.policy import still_out_of_service

    why = "post-bless hook 10-active exited with status 1"
    renewed = still_out_of_service(why, True)
    assert renewed.level == "warning" and renewed.message.startswith(why) and "(renewed)" in renewed.message
    lost = still_out_of_service(why, False)
    assert lost.level == "error" and "could not be renewed" in lost.message
    assert "no reboot lock held" in still_out_of_service(why, None).message
