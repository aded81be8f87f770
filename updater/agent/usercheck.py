"""The site's own health checks: every executable in health.d, run in name order.

Kept apart from the agent (no TUF, HTTP or image writer imports), so the
berth-check-user unit on every boot's path costs a Python start and little more.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from updater.agent.host import HostPaths
from updater.agent.journal import log
from updater.agent.settings import credentials_dir_from_env, load_settings

CHECK_TIMEOUT_S = 300


def check_directories(paths: HostPaths) -> list[Path]:
    """/etc/berth/health.d (the image's) and <state_dir>/health.d (the site's, on /var)."""
    settings = load_settings(paths.config, credentials_dir_from_env())
    return [paths.config.parent / "health.d", Path(settings.state_dir) / "health.d"]


def run_user_checks(directories: list[Path]) -> int:
    """Run every executable in ``directories``; 1 if one of them fails, else 0."""
    failed = 0
    for directory in directories:
        if not directory.is_dir():
            continue
        for check in sorted(directory.iterdir()):
            if not (check.is_file() and os.access(check, os.X_OK)):
                continue
            result = subprocess.run(
                [str(check)], capture_output=True, text=True, timeout=CHECK_TIMEOUT_S, check=False
            )
            level = "info" if result.returncode == 0 else "error"
            log(level, f"health check {check}: exit {result.returncode} {result.stderr.strip()[-200:]}")
            failed += result.returncode != 0
    return 1 if failed else 0
