"""service.apart: work done in a forked child (the update step, the settings' reading)."""

from __future__ import annotations

import os
import signal

import pytest

from cli.errors import UserError
from updater.agent.service import apart


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
