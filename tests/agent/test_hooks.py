"""The reboot hooks' pure parts (order, judging) and their runner on real executables
(the agent's use of them, with the lock and the reports, is in test_shell.py)."""

from __future__ import annotations

from pathlib import Path

from updater.agent.hooks import Builtins, HookResult, HookRunner, Stage, failure, hook_names


def test_hooks_run_in_bytewise_name_order_skipping_hidden_and_leftover_files() -> None:
    names = ["20-b", "10-a", "B", "a", ".swp", "30-c~", "40-d.dpkg-old", "05"]
    assert hook_names(names) == ["05", "10-a", "20-b", "B", "a"]


def test_the_first_failing_hook_is_the_stages_failure() -> None:
    ok, bad, slow = HookResult("10", 0), HookResult("20", 2, "x" * 1000 + "the end\n"), HookResult("30", None)
    assert failure(Stage.PRE_REBOOT, [ok], 5) is None
    why = failure(Stage.PRE_REBOOT, [ok, bad, slow], 5)
    assert why is not None and why.startswith("pre-reboot hook 20 exited with status 2: x")
    assert why.endswith("the end") and len(why) < 500
    assert failure(Stage.POST_BLESS, [slow], 7.5) == "post-bless hook 30 still running after the 7.5 s budget (killed)"


def _write(folder: Path, name: str, body: str, mode: int = 0o755) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(f"#!/bin/sh\n{body}\n")
    (folder / name).chmod(mode)


def test_a_stage_stops_at_its_first_failure_and_shares_one_budget(tmp_path: Path) -> None:
    pre = tmp_path / "hooks/pre-reboot"
    _write(pre, "10-env", 'echo "$BERTH_HOOK_STAGE $BERTH_TARGET_VERSION"')
    _write(pre, "20-fails", "echo nope; exit 4")
    _write(pre, "30-never", "touch never")
    _write(pre, "40-not-executable", "exit 9", mode=0o644)
    runner = HookRunner(tmp_path, 30)
    assert [p.name for p in runner.executables(Stage.PRE_REBOOT)] == ["10-env", "20-fails", "30-never"]
    results = runner.run(Stage.PRE_REBOOT, {"BERTH_HOOK_STAGE": "pre-reboot", "BERTH_TARGET_VERSION": "1.1"})
    assert results == [HookResult("10-env", 0, "pre-reboot 1.1\n"), HookResult("20-fails", 4, "nope\n")]
    assert not (tmp_path / "never").exists()


def test_a_hook_and_its_children_are_killed_when_the_budget_runs_out(tmp_path: Path) -> None:
    _write(tmp_path / "hooks/post-bless", "10-hangs", "echo started; sleep 60 & sleep 60")
    results = HookRunner(tmp_path, 1).run(Stage.POST_BLESS, {})
    assert results == [HookResult("10-hangs", None, "started\n")]


def test_no_hooks_no_directories_nothing_present(tmp_path: Path) -> None:
    runner = HookRunner(tmp_path, 30)
    assert not runner.present() and runner.run(Stage.PRE_REBOOT, {}) == []
    seen: list[float] = []

    def builtin(left_s: float) -> HookResult:
        seen.append(left_s)
        return HookResult("builtin", 0)

    with_builtin = HookRunner(tmp_path, 30, Builtins(post_bless=(builtin,)))
    assert with_builtin.present() and with_builtin.run(Stage.POST_BLESS, {}) == [HookResult("builtin", 0)]
    assert 29 < seen[0] <= 30
