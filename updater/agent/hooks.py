"""Reboot hooks: what the agent runs around a reboot so that the host's work moves away first.

Two stages, each a directory of executables under the state dir (on /var, so
provisioning writes them and updates keep them), run in name order:

- ``<state_dir>/hooks/pre-reboot/``: after the fleet granted the reboot lock, before
  the reboot (drain the node: ``docker node update --availability drain``,
  ``kubectl drain``);
- ``<state_dir>/hooks/post-bless/``: after the new boot is blessed (or the host fell
  back to the old version), before the lock is given back (make the node active).

Each stage has one budget (the setting ``hook_timeout_s``) shared by its hooks in
turn; the first hook that fails or outlives the budget ends the stage, failed. A
built-in hook (the swarm drain, updater/agent/swarm.py) runs first before the
reboot and last after the bless, inside the same budget. Choosing and judging are
pure; ``HookRunner`` at the end of this module is the edge that runs processes.
"""

from __future__ import annotations

import enum
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from updater.agent.journal import notify

HOOKS_DIR = "hooks"
# What a hook's failure report keeps of its output (the report's detail is short).
OUTPUT_TAIL = 400
# The unit's watchdog (WatchdogSec=120s) is fed this often while a hook runs.
FEED_S = 10.0


def feed_watchdog() -> None:
    notify(WATCHDOG="1")


class Stage(enum.StrEnum):
    PRE_REBOOT = "pre-reboot"
    POST_BLESS = "post-bless"


@dataclass(frozen=True)
class HookResult:
    name: str
    returncode: int | None  # None: still running when the stage's budget ran out (killed)
    output: str = ""  # the tail of its stdout and stderr

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def hook_names(names: Iterable[str]) -> list[str]:
    """The hooks of a directory listing, in the order they run: by name (bytewise, as
    run-parts does), skipping hidden files and editors' and dpkg's leftovers."""
    def skipped(name: str) -> bool:
        return name.startswith(".") or name.endswith("~") or ".dpkg-" in name
    return sorted((n for n in names if not skipped(n)), key=lambda n: n.encode())


def failure(stage: Stage, results: Sequence[HookResult], budget_s: float) -> str | None:
    """Why ``stage`` failed, for the report and the journal; None when every hook succeeded."""
    for result in results:
        if result.ok:
            continue
        how = (f"still running after the {budget_s:g} s budget (killed)" if result.returncode is None
               else f"exited with status {result.returncode}")
        tail = f": {result.output.strip()[-OUTPUT_TAIL:]}" if result.output.strip() else ""
        return f"{stage.value} hook {result.name} {how}{tail}"
    return None


# A built-in hook: given the seconds left of the stage's budget, what it did.
BuiltinHook = Callable[[float], HookResult]


@dataclass(frozen=True)
class Builtins:
    """The built-in hooks of each stage (none: only the directories' hooks run)."""

    pre_reboot: tuple[BuiltinHook, ...] = ()
    post_bless: tuple[BuiltinHook, ...] = ()


class HookRunner:
    """Runs one stage: the built-ins and the directory's executables, within one budget."""

    def __init__(self, state_dir: Path, budget_s: float, builtins: Builtins = Builtins(),
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.root = state_dir / HOOKS_DIR
        self.budget_s, self.builtins, self.clock = budget_s, builtins, clock

    def directory(self, stage: Stage) -> Path:
        return self.root / stage.value

    def executables(self, stage: Stage) -> list[Path]:
        folder = self.directory(stage)
        if not folder.is_dir():
            return []
        paths = [folder / name for name in hook_names(p.name for p in folder.iterdir())]
        return [p for p in paths if p.is_file() and os.access(p, os.X_OK)]

    def present(self) -> bool:
        """Whether any hook would run around a reboot (none: the agent reboots as it always did)."""
        return bool(self.builtins.pre_reboot or self.builtins.post_bless
                    or self.executables(Stage.PRE_REBOOT) or self.executables(Stage.POST_BLESS))

    def run(self, stage: Stage, env: Mapping[str, str]) -> list[HookResult]:
        """Each hook in turn until one fails; the results of those that ran."""
        deadline = self.clock() + self.budget_s
        files: list[BuiltinHook] = [self._file_hook(p, env) for p in self.executables(stage)]
        hooks = ([*self.builtins.pre_reboot, *files] if stage is Stage.PRE_REBOOT
                 else [*files, *self.builtins.post_bless])
        results: list[HookResult] = []
        for hook in hooks:
            result = hook(max(deadline - self.clock(), 0.0))
            results.append(result)
            if not result.ok:
                break
        return results

    @staticmethod
    def _file_hook(path: Path, env: Mapping[str, str]) -> BuiltinHook:
        def run(left_s: float) -> HookResult:
            try:
                # Its own process group: a budget that runs out kills the hook's children too
                # (a shell's sleep would otherwise hold the output pipe open).
                process = subprocess.Popen([str(path)], env={**os.environ, **env}, stdin=subprocess.DEVNULL,
                                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                           start_new_session=True)
            except OSError as error:  # not runnable after all (a bad #! line)
                return HookResult(path.name, 126, str(error))
            deadline = time.monotonic() + left_s
            while True:
                feed_watchdog()
                try:
                    # Waited for in slices; a retried communicate() loses no output.
                    out, _ = process.communicate(timeout=max(min(deadline - time.monotonic(), FEED_S), 0.001))
                    code: int | None = process.returncode
                    break
                except subprocess.TimeoutExpired:
                    if time.monotonic() < deadline:
                        continue
                    os.killpg(process.pid, signal.SIGKILL)
                    out, _ = process.communicate()
                    code = None
                    break
            return HookResult(path.name, code, out.decode(errors="replace")[-OUTPUT_TAIL:])
        return run
