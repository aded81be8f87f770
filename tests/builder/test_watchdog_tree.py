"""The hardware watchdog in the image tree: PID 1's settings in the root and, from the
same file, in the initrd, and the drivers the initrd carries so it is armed there."""

from __future__ import annotations

import configparser
import re
from pathlib import Path

HOST = Path(__file__).resolve().parents[2] / "images/host"
DROP_IN = "usr/lib/systemd/system.conf.d/berth-watchdog.conf"
UNITS = {"s": 1, "min": 60}


def seconds(value: str) -> int:
    match = re.fullmatch(r"(\d+)(s|min)", value)
    assert match, f"not a duration this test reads: {value!r}"
    return int(match[1]) * UNITS[match[2]]


def mkosi_list(conf: Path, key: str) -> list[str]:
    """A mkosi setting's values: on its own line and on the indented lines after it."""
    values: list[str] = []
    lines = conf.read_text().splitlines()
    for at, line in enumerate(lines):
        if line.startswith(f"{key}="):
            values += [v for v in line.split("=", 1)[1].split() if v]
            for more in lines[at + 1:]:
                if not more.startswith((" ", "\t")):
                    break
                if not more.strip().startswith("#"):
                    values.append(more.strip())
    return values


def test_pid1_arms_the_watchdog_with_a_timeout_a_slow_healthy_host_never_reaches() -> None:
    manager = configparser.ConfigParser()
    manager.read(HOST / "mkosi.extra" / DROP_IN)
    runtime = seconds(manager["Manager"]["RuntimeWatchdogSec"])
    # PID 1 pings at half the timeout: it may stay away from its event loop a minute
    # (the README's bounds), and a hang is reset within a few minutes.
    assert 60 <= runtime // 2 and runtime <= 300
    assert seconds(manager["Manager"]["RebootWatchdogSec"]) >= 180  # systemd-shutdown's kill waits


def test_the_initrd_reads_the_same_watchdog_settings_and_carries_the_drivers() -> None:
    trees = mkosi_list(HOST / "initrd/mkosi.conf", "ExtraTrees")
    source, target = next(t.split(":") for t in trees if "system.conf.d" in t)
    assert (HOST / "initrd" / source / "berth-watchdog.conf").resolve() == (HOST / "mkosi.extra" / DROP_IN).resolve()
    assert target == "/" + str(Path(DROP_IN).parent)
    modules = mkosi_list(HOST / "mkosi.conf", "KernelModulesInitrdInclude")
    assert {"/i6300esb", "/wdat_wdt"} <= set(modules)  # QEMU's, and ACPI WDAT on servers
