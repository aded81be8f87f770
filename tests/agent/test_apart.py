"""service.apart: work done in a forked child (the update step, the settings' reading)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from cli.errors import UserError
from updater.agent.service import apart

REPO = Path(__file__).resolve().parents[2]
# In a fresh interpreter: in the whole suite an earlier test may have imported the module.
PROBE = """
import sys
from updater.agent.service import apart

def work():
    import xml.dom.minidom  # loaded in the child only
    return "x" * 200_000  # more than a pipe holds at once

before = "xml.dom.minidom" in sys.modules
answer = apart(work, "work")
print(before, answer == "x" * 200_000, "xml.dom.minidom" in sys.modules)
"""


def test_the_answer_comes_back_and_what_the_child_loads_stays_there() -> None:
    done = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO, check=True,
                          capture_output=True, text=True)
    assert done.stdout.split() == ["False", "True", "False"]


def test_a_user_error_is_raised_again_and_a_crash_is_told() -> None:
    def refused() -> str:
        raise UserError("agent.yaml: unknown setting 'colour'")

    def broken() -> str:
        raise KeyError("slot")

    with pytest.raises(UserError, match="unknown setting 'colour'"):
        apart(refused, "reading the settings")
    assert apart(broken, "agent step") == "crash KeyError: 'slot'"


def test_a_child_killed_by_a_signal_ends_the_service() -> None:
    def killed() -> str:
        os.kill(os.getpid(), signal.SIGKILL)
        return ""

    with pytest.raises(SystemExit, match="agent step killed by signal 9"):
        apart(killed, "agent step")
