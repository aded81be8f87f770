"""The site health check that hangs one boot (qemu/hang.py): on every other boot it
passes and stays, so the host's other boots are not hung. (The hang itself is proven
in QEMU, tests/e2e/test_update_and_fallback.py: it would hang this machine.)"""

from __future__ import annotations

import subprocess
from pathlib import Path

from qemu import hang


def test_the_hanging_check_passes_and_stays_on_a_boot_of_another_root(tmp_path: Path) -> None:
    check = tmp_path / "00-hang-once"
    check.write_text(hang.health_check_hanging_once("0" * 64))  # no such root here
    check.chmod(0o755)
    assert subprocess.run([str(check)], timeout=10, check=False).returncode == 0
    assert check.exists()


def test_the_hang_script_is_valid_sh_and_says_when_it_starts() -> None:
    assert subprocess.run(["sh", "-n", "-c", hang.health_check_hanging_once("a" * 64)], check=False).returncode == 0
    assert hang.MARKER in hang.STARVE
