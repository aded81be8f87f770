"""Boot time and idle memory of a built berth image under QEMU (median of several boots).

Each boot is a fresh VM (new overlay, new UEFI variables: what a new host sees).
Measured from the moment QEMU is started, on the host's clock:
  login    the serial getty's login prompt appears
  ready    BERTH-READY: boot-complete.target reached (health checks passed, blessed)
  engine   the container engine's service became active (its API answers; from
           systemd's own timestamp, mapped onto the host clock through the
           uptime printed with BERTH-READY)
plus the time before the kernel starts (firmware, systemd-boot, loading the
UKI: QEMU start to BERTH-READY minus the guest's uptime), systemd-analyze's
split (kernel, initrd, userspace), the
slowest units, and memory in use at idle (MemTotal - MemAvailable, 20 s after
ready).

    ~/.cache/berth/venv/bin/python bench/boot.py out/berth_1.0.0 [--boots 3] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from qemu.harness import VM
from qemu.ready import PATTERN as READY_PATTERN
from qemu.ready import Ready
from updater import contract

LOGIN = re.compile(r"login: ")
ENGINE_UNIT = {"docker": "docker.service", "podman": "podman.socket"}
SETTLE_S = 20


def seconds(text: str) -> float:
    """systemd's '1min 2.5s' / '812ms' / '3.1s' as seconds."""
    total = 0.0
    for value, unit in re.findall(r"([0-9.]+)(min|ms|s)", text):
        total += float(value) * {"min": 60.0, "s": 1.0, "ms": 0.001}[unit]
    return total


def analyze_split(line: str) -> dict[str, float]:
    """'Startup finished in 1.2s (firmware) + 1min 3s (kernel) + ...' as {phase: s}."""
    body = line.split(" in ", 1)[1].split(" = ")[0]
    split = {}
    for part in body.split(" + "):
        value, _, phase = part.rpartition(" (")
        split[phase.rstrip(")")] = seconds(value)
    return split


def one_boot(artifact: Path, engine: str, state: Path) -> dict[str, object]:
    with VM(artifact, state) as vm:
        started = time.monotonic()
        vm.start()
        seen: dict[str, float] = {}
        ready: Ready | None = None
        deadline = started + vm.boot_timeout
        while ("login" not in seen or ready is None) and time.monotonic() < deadline:
            text = vm.console.text
            now = time.monotonic() - started
            if "login" not in seen and LOGIN.search(text):
                seen["login"] = now
            match = READY_PATTERN.search(text)
            if ready is None and match:
                seen["ready"] = now
                ready = Ready.from_match(match)
            if vm.stopped_reason():
                raise SystemExit(f"boot failed: {vm.stopped_reason()}")
            time.sleep(0.1)
        if ready is None or "login" not in seen:
            raise SystemExit(
                f"no login prompt or BERTH-READY in {vm.boot_timeout:.0f} s; see {vm.state.serial_log}"
            )
        vm.wait_ssh()
        unit = ENGINE_UNIT[engine]
        active_us = int(
            vm.run(f"systemctl show -P ActiveEnterTimestampMonotonic {unit}").stdout.strip()
        )
        seen["engine"] = seen["ready"] - (ready.uptime_s - active_us / 1e6)
        vm.run(f"{engine} info >/dev/null")  # and it does answer
        analyze = vm.run("systemd-analyze time").stdout.splitlines()[0]
        blame = vm.run("systemd-analyze blame --no-pager | head -n 6").stdout.strip().splitlines()
        time.sleep(max(0.0, SETTLE_S - (time.monotonic() - started - seen["ready"])))
        meminfo = {
            line.split(":")[0]: int(line.split()[1])
            for line in vm.run("cat /proc/meminfo").stdout.splitlines()
        }
        used_mib = (meminfo["MemTotal"] - meminfo["MemAvailable"]) / 1024
        return {
            "accel": vm.accel.value,
            **{f"{key}_s": round(value, 1) for key, value in seen.items()},
            "guest_uptime_at_ready_s": ready.uptime_s,
            # QEMU start to kernel start: firmware + systemd-boot + loading the UKI
            "firmware_and_loader_s": round(seen["ready"] - ready.uptime_s, 1),
            "systemd_analyze": analyze_split(analyze),
            "slowest_units": [line.strip() for line in blame],
            "idle_memory_mib": round(used_mib),
        }


def median_of(boots: list[dict[str, object]], key: str) -> float:
    return round(statistics.median(float(b[key]) for b in boots), 1)  # type: ignore[arg-type]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("artifact", type=Path, help="a berth build output directory")
    parser.add_argument("--boots", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write every boot's figures here")
    args = parser.parse_args()
    engine = contract.Manifest.from_json((args.artifact / contract.MANIFEST).read_text()).engine
    boots = []
    with tempfile.TemporaryDirectory(prefix="berth-bench-boot-") as scratch:
        for n in range(args.boots):
            result = one_boot(args.artifact, engine, Path(scratch, f"vm{n}"))
            boots.append(result)
            print(
                f"boot {n + 1}/{args.boots}: "
                + ", ".join(f"{k}={v}" for k, v in result.items() if k.endswith(("_s", "_mib"))),
                file=sys.stderr,
            )
    phases = sorted({p for b in boots for p in b["systemd_analyze"]})  # type: ignore[attr-defined]
    summary = {
        "artifact": str(args.artifact),
        "engine": engine,
        "accel": boots[0]["accel"],
        "boots": len(boots),
        **{
            f"median_{k}": median_of(boots, k)
            for k in ("firmware_and_loader_s", "login_s", "ready_s", "engine_s", "idle_memory_mib")
        },
        "median_systemd_analyze_s": {
            p: round(statistics.median(b["systemd_analyze"].get(p, 0.0) for b in boots), 2)  # type: ignore[attr-defined]
            for p in phases
        },
        "slowest_units_last_boot": boots[-1]["slowest_units"],
    }
    print(json.dumps(summary, indent=2))
    if args.json:
        args.json.write_text(json.dumps({"summary": summary, "boots": boots}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
