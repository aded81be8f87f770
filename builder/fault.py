"""Releases built to fail on purpose (setting `fault`): the proof that a bad update
falls back by itself. Everything else in such a release is the normal image.

- health-check: a check in /etc/berth/health.d that always fails, so
  boot-complete.target is never reached and the boot is never blessed.
- kernel-panic: init=/usr/bin/false on the UKI's command line; the initrd's
  systemd switches to it as PID 1, it exits, the kernel panics and (panic= on
  the image's command line) reboots.
"""

from __future__ import annotations

from pathlib import Path

FAILING_CHECK = """#!/bin/sh
echo "this release was built with fault=health-check: failing on purpose" >&2
exit 1
"""


def extra_trees(fault: str, tree: Path) -> list[Path]:
    """Files the faulty release adds to the root (made under ``tree``)."""
    if fault != "health-check":
        return []
    check = tree / "etc/berth/health.d/00-built-to-fail"
    check.parent.mkdir(parents=True)
    check.write_text(FAILING_CHECK)
    check.chmod(0o755)
    return [tree]


def kernel_command_line(fault: str) -> list[str]:
    """Arguments the faulty release adds to the UKI's kernel command line."""
    return ["init=/usr/bin/false"] if fault == "kernel-panic" else []
