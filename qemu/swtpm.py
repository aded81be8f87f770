"""A VM's TPM 2.0: swtpm (Debian's swtpm) serving QEMU's TPM emulator backend (I/O edge).

Its state (the TPM's persistent objects: seeds, the SRK systemd makes, NV) lives in
the VM's state directory (``tpm/``), so it survives as the disk does. The process
outlives QEMU: it serves each new connection (no ``--terminate``), so a guest
reset and a power cut (QEMU stopped and started again) meet the same TPM, with its
PCRs reset as on real hardware (QEMU initialises the TPM at each machine start).
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from cli.errors import UserError

READY_SECONDS = 10.0


def swtpm_command(state: Path, socket: Path, log: Path) -> list[str]:
    """The argv of a TPM 2.0 with its state in ``state``, controlled over ``socket``."""
    return ["swtpm", "socket", "--tpm2", "--tpmstate", f"dir={state}",
            "--ctrl", f"type=unixio,path={socket}", "--log", f"file={log},level=1"]


class Swtpm:
    """One VM's swtpm process: ``start()`` (again after it died), ``stop()``."""

    def __init__(self, state: Path, socket: Path) -> None:
        self.state = state
        self.socket = socket
        self.log = state / "swtpm.log"
        self._process: subprocess.Popen[bytes] | None = None

    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        if self.running():
            return
        self.state.mkdir(parents=True, exist_ok=True)
        self.socket.unlink(missing_ok=True)
        try:
            self._process = subprocess.Popen(swtpm_command(self.state, self.socket, self.log),
                                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                             stderr=subprocess.PIPE)
        except FileNotFoundError as error:
            raise UserError("swtpm not found: install swtpm and swtpm-tools (scripts/setup-host.sh)") from error
        deadline = time.monotonic() + READY_SECONDS
        while not self.socket.exists():
            if self._process.poll() is not None or time.monotonic() > deadline:
                assert self._process.stderr is not None
                said = self._process.stderr.read().decode(errors="replace").strip() if self._process.poll() is not None else ""
                self.stop()
                raise UserError(f"swtpm did not come up ({said or 'no control socket'}); log: {self.log}")
            time.sleep(0.02)

    def stop(self) -> None:
        if self._process is None:
            return
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        if self._process.stderr is not None:
            self._process.stderr.close()
        self._process = None
