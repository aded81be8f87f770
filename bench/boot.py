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
slowest units, memory in use at idle (MemTotal - MemAvailable, 20 s after
ready) and the agent's resident set then (and its anonymous part), and the CPU
the agent used per minute from ready to then.

    ~/.cache/berth/venv/bin/python bench/boot.py out/berth_1.0.0 [--boots 3] [--json FILE] [--fleet]

``--fleet``: the artifact is published and served by `berth serve` over HTTPS
(qemu.lab), and each VM boots enrolled in it (SMBIOS credentials, a 5 s poll), so
the agent idles as a fleet's host does: asking the server every poll. Without it
the agent has no server and only its standalone loop runs.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from qemu.harness import VM
from qemu.lab import Lab, lab_group
from qemu.ready import PATTERN as READY_PATTERN
from qemu.ready import Ready
from updater import contract

LOGIN = re.compile(r"login: ")
ENGINE_UNIT = {"docker": "docker.service", "podman": "podman.socket"}
SETTLE_S = 20
USER_HZ = 100  # the unit of /proc/PID/stat's times on x86 Linux


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


MakeVM = Callable[[Path], VM]


@contextmanager
def vm_maker(artifact: Path, scratch: Path, fleet: bool) -> Iterator[MakeVM]:
    """How each boot's VM is made: plain, or enrolled in a fleet server serving ``artifact``."""
    if not fleet:
        yield lambda state: VM(artifact, state)
        return
    with Lab(scratch / "lab") as lab:
        lab.publish(artifact)
        with lab.serve({"bench": lab_group()}):
            yield lambda state: lab.boot(state.name, artifact, group="bench", start=False).vm


def agent_cpu_s(vm: VM, pid: str) -> float:
    """CPU seconds the agent used so far, its finished steps' children included."""
    fields = vm.run(f"cat /proc/{pid}/stat").stdout.rsplit(")", 1)[1].split()
    return sum(int(x) for x in fields[11:15]) / USER_HZ


def one_boot(make_vm: MakeVM, engine: str, state: Path) -> dict[str, object]:
    with make_vm(state) as vm:
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
        agent_pid = vm.run("systemctl show -P MainPID berth-agent.service").stdout.strip()
        cpu_at, cpu_before = time.monotonic(), agent_cpu_s(vm, agent_pid)
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
        # The agent idle: its main process's resident set (between steps the
        # service holds only its core; each step runs in a child that exits).
        agent_rss_kib = int(vm.run(f"ps -o rss= -p {agent_pid}").stdout.strip() or 0)
        agent_anon_kib = int(vm.run(f"awk '/^RssAnon:/{{print $2}}' /proc/{agent_pid}/status").stdout.strip() or 0)
        cpu_per_min = (agent_cpu_s(vm, agent_pid) - cpu_before) / (time.monotonic() - cpu_at) * 60
        return {
            "accel": vm.accel.value,
            **{f"{key}_s": round(value, 1) for key, value in seen.items()},
            "guest_uptime_at_ready_s": ready.uptime_s,
            # QEMU start to kernel start: firmware + systemd-boot + loading the UKI
            "firmware_and_loader_s": round(seen["ready"] - ready.uptime_s, 1),
            "systemd_analyze": analyze_split(analyze),
            "slowest_units": [line.strip() for line in blame],
            "idle_memory_mib": round(used_mib),
            "agent_idle_rss_mib": round(agent_rss_kib / 1024, 1),
            "agent_idle_anon_mib": round(agent_anon_kib / 1024, 1),
            "agent_cpu_s_per_min": round(cpu_per_min, 2),
        }


def median_of(boots: list[dict[str, object]], key: str) -> float:
    return round(statistics.median(float(b[key]) for b in boots), 1)  # type: ignore[arg-type]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("artifact", type=Path, help="a berth build output directory")
    parser.add_argument("--boots", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write every boot's figures here")
    parser.add_argument("--fleet", action="store_true", help="boot enrolled in a fleet server (qemu.lab)")
    args = parser.parse_args()
    engine = contract.Manifest.from_json((args.artifact / contract.MANIFEST).read_text()).engine
    boots = []
    with tempfile.TemporaryDirectory(prefix="berth-bench-boot-") as scratch, \
            vm_maker(args.artifact, Path(scratch), args.fleet) as make_vm:
        for n in range(args.boots):
            result = one_boot(make_vm, engine, Path(scratch, f"vm{n}"))
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
        "fleet": args.fleet,
        "accel": boots[0]["accel"],
        "boots": len(boots),
        **{
            f"median_{k}": median_of(boots, k)
            for k in (
                "firmware_and_loader_s", "login_s", "ready_s", "engine_s", "idle_memory_mib",
                "agent_idle_rss_mib", "agent_idle_anon_mib", "agent_cpu_s_per_min",
            )
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
