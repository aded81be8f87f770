"""Choose KVM when it really boots firmware here, TCG otherwise; remember the verdict.

/dev/kvm existing proves little: on some machines QEMU aborts on an MSR or
stops with "KVM internal error ... emulation failure" inside OVMF. So the probe
is a short real boot of the firmware alone under KVM: KVM works iff OVMF gets as
far as its boot manager (it prints ``BdsDxe`` on the serial port) while QEMU is
still alive. The verdict is cached per QEMU version, kernel and CPU model.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from cli.cache import cache_dir
from qemu.machine import OVMF_CODE, OVMF_VARS_TEMPLATE, Accel

PROBE_SECONDS = 20.0
_FIRMWARE_REACHED = b"BdsDxe"


def _host_key(binary: str) -> str:
    """What the verdict depends on: QEMU build, host kernel, CPU model."""
    version = subprocess.run([binary, "--version"], check=False, capture_output=True, text=True).stdout
    cpu = ""
    try:
        cpu = next(
            (line for line in Path("/proc/cpuinfo").read_text().splitlines()
             if line.startswith("model name")),
            "",
        )
    except OSError:
        pass
    return hashlib.sha256(f"{version}\n{platform.release()}\n{cpu}".encode()).hexdigest()[:16]


def kvm_boots_firmware(binary: str = "qemu-system-x86_64", seconds: float = PROBE_SECONDS) -> bool:
    """Boot OVMF with no disk under KVM and see whether it reaches its boot manager."""
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False
    with tempfile.TemporaryDirectory(prefix="berth-kvm-probe-") as tmp:
        efi_vars = Path(tmp, "vars.fd")
        serial = Path(tmp, "serial.log")
        shutil.copyfile(OVMF_VARS_TEMPLATE, efi_vars)
        argv = [
            binary, "-machine", "q35,smm=off", *Accel.KVM.args, "-m", "256M",
            "-drive", f"if=pflash,format=raw,readonly=on,file={OVMF_CODE}",
            "-drive", f"if=pflash,format=raw,file={efi_vars}",
            "-display", "none", "-monitor", "none", "-net", "none",
            "-serial", f"file:{serial}",
        ]
        process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline and process.poll() is None:
                if serial.exists() and _FIRMWARE_REACHED in serial.read_bytes():
                    return process.poll() is None
                time.sleep(0.2)
            return False
        finally:
            process.kill()
            process.wait()


def choose_accel(binary: str = "qemu-system-x86_64") -> Accel:
    """KVM if the (cached) probe says it boots firmware here, else TCG.

    BERTH_ACCEL=kvm|tcg overrides the probe.
    """
    forced = os.environ.get("BERTH_ACCEL")
    if forced:
        return Accel(forced)
    verdict_file = cache_dir() / "accel.json"
    key = _host_key(binary)
    try:
        cached = json.loads(verdict_file.read_text())
        if cached.get("key") == key:
            return Accel(cached["accel"])
    except (OSError, ValueError, KeyError):
        pass
    accel = Accel.KVM if kvm_boots_firmware(binary) else Accel.TCG
    verdict_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = verdict_file.with_suffix(".tmp")
    tmp.write_text(json.dumps({"key": key, "accel": accel.value}))
    tmp.replace(verdict_file)
    return accel
