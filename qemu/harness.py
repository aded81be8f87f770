"""Boot a berth image in QEMU like a host and drive it from outside.

    with VM(artifact_dir, state_dir).start() as vm:
        ready = vm.wait_ready()          # BERTH-READY on the console, parsed
        vm.run("docker info")            # over SSH with the VM's own key
        vm.reboot(); vm.wait_ready()     # the overlay disk keeps /var across it

Failures explain themselves: a boot that hangs raises ConsoleTimeout with the
console's tail, a QEMU that dies raises GuestDied with QEMU's own last words.
"""

from __future__ import annotations

import re
import socket
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Self

from qemu.qmp import ConnectError

from qemu import budget
from qemu.accel import choose_accel
from qemu.console import BOOT_FAILURE, ConsoleLog, GuestDied, tail
from qemu.lan import LanPort
from qemu.machine import GUEST_SSH_PORT, Accel, Console, Forward, Machine, qemu_command
from qemu.monitor import Monitor
from qemu.ready import PATTERN as READY_PATTERN
from qemu.ready import Ready
from qemu.ssh import AUTHORIZED_KEYS_CREDENTIAL, SshTarget
from qemu.state import VmState, resolve_disk
from qemu.swtpm import Swtpm

# Upper bounds, not expectations: a TCG boot takes ~40 s on an idle machine,
# and these machines' cores are shared. A Secure Boot VM from setup mode (OVMF's SMM
# build: systemd-boot enrols the keys, resets, boots enforcing) needs no more: 40 s to
# BERTH-READY against 35 s unsigned on plain OVMF for the same podman image, measured
# on this 2-core machine (Dec 2026); its UEFI variable writes take well under a second.
BOOT_TIMEOUT = {Accel.KVM: 120.0, Accel.TCG: 360.0}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _as_bytes(value: str | bytes) -> bytes:
    return value.encode() if isinstance(value, str) else value


def build_machine(
    state: VmState,
    base_disk: Path,
    *,
    accel: Accel,
    console: Console,
    memory_mb: int,
    cpus: int,
    forwards: tuple[Forward, ...],
    host_services: Mapping[int, int],
    credentials: Mapping[str, str | bytes],
    data_disk: Path | None,
    qmp_socket: Path | None = None,
    seed: Path | None = None,
    secure_boot: bool = False,
    metadata_service: int | None = None,
    system_info: Mapping[str, str] | None = None,
    lan: LanPort | None = None,
    tpm_socket: Path | None = None,
) -> Machine:
    """Prepare the VM's files and describe the machine (SSH key as a credential)."""
    public_key = state.prepare(base_disk)
    return Machine(
        disk=state.disk,
        efi_vars=state.efi_vars,
        accel=accel,
        system_uuid=state.system_uuid,
        memory_mb=memory_mb,
        cpus=cpus,
        console=console,
        serial_log=state.serial_log,
        qmp_socket=qmp_socket,
        forwards=forwards,
        host_services=dict(host_services),
        credentials={
            AUTHORIZED_KEYS_CREDENTIAL: public_key,
            **{name: _as_bytes(value) for name, value in credentials.items()},
        },
        data_disk=data_disk,
        seed=seed,
        secure_boot=secure_boot,
        metadata_service=metadata_service,
        system_info=dict(system_info or {}),
        lan=lan,
        tpm_socket=tpm_socket,
    )


class VM:
    def __init__(
        self,
        artifact: Path,
        state_dir: Path,
        *,
        memory_mb: int = 2048,
        cpus: int = 2,
        credentials: Mapping[str, str | bytes] | None = None,
        forwards: tuple[Forward, ...] = (),
        host_services: Mapping[int, int] | None = None,
        data_disk: Path | None = None,
        accel: Accel | None = None,
        seed: Path | None = None,
        launcher: tuple[str, ...] = (),
        secure_boot: bool = False,
        metadata_service: int | None = None,
        system_info: Mapping[str, str] | None = None,
        lan: LanPort | None = None,
        tpm: bool = False,
    ) -> None:
        self.state = VmState(state_dir)
        # A prefix QEMU is started under, e.g. qemu.throttle.cpu_quota()'s.
        self.launcher = launcher
        self.ssh_port = free_port()
        self.accel = accel or choose_accel()
        self._runtime = tempfile.TemporaryDirectory(prefix="berth-vm-")  # short socket path
        # A TPM 2.0 that lives as long as this VM object, across its resets and restarts.
        self.swtpm = Swtpm(self.state.tpm, Path(self._runtime.name, "swtpm.sock")) if tpm else None
        self.machine = build_machine(
            self.state,
            resolve_disk(artifact),
            accel=self.accel,
            console=Console.LOG,
            memory_mb=memory_mb,
            cpus=cpus,
            forwards=(Forward(self.ssh_port, GUEST_SSH_PORT), *forwards),
            host_services=host_services or {},
            credentials=credentials or {},
            data_disk=data_disk,
            qmp_socket=Path(self._runtime.name, "qmp.sock"),
            seed=seed,
            secure_boot=secure_boot,
            metadata_service=metadata_service,
            system_info=system_info,
            lan=lan,
            tpm_socket=self.swtpm.socket if self.swtpm else None,
        )
        self.console = ConsoleLog(self.state.serial_log)
        self.ssh = SshTarget(self.ssh_port, self.state.private_key)
        self._process: subprocess.Popen[bytes] | None = None
        self._monitor: Monitor | None = None
        self._running: int | None = None  # this run's handle in qemu.budget

    @property
    def boot_timeout(self) -> float:
        return BOOT_TIMEOUT[self.accel]

    @property
    def monitor(self) -> Monitor:
        if self._monitor is None:
            raise RuntimeError("the VM is not running")
        return self._monitor

    def start(self) -> VM:
        # A restarted VM appends to its console log; read only what this run prints.
        self.console = ConsoleLog(self.state.serial_log)
        self.state.serial_log.unlink(missing_ok=True)
        if self.swtpm is not None:
            self.swtpm.start()  # a no-op while it runs: the same TPM across power cuts
        with self.state.qemu_log.open("ab") as log:
            self._process = subprocess.Popen(
                [*self.launcher, *qemu_command(self.machine)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log,
            )
        self._running = budget.started()
        assert self.machine.qmp_socket is not None
        process = self._process
        try:
            self._monitor = Monitor(self.machine.qmp_socket, lambda: process.poll() is None)
        except (ConnectError, OSError) as error:
            reason = self.stopped_reason() or f"no QMP connection: {error}"
            self.stop()
            raise GuestDied(f"QEMU did not come up: {reason}") from error
        return self

    def stopped_reason(self) -> str | None:
        """None while the guest runs; otherwise why it does not."""
        if self._process is None:
            return "QEMU was not started"
        code = self._process.poll()
        if code is not None:
            return f"QEMU exited with status {code}: {tail(self.state.qemu_log.read_text(errors='replace'), 5)}"
        if self._monitor is not None and self._monitor.status() == "internal-error":
            return "the virtual CPU stopped with an internal error (KVM?)"
        return None

    def _wait(self, pattern: str | re.Pattern[str], timeout: float | None) -> re.Match[str]:
        # Fails early when QEMU dies or the guest drops to the emergency shell.
        return self.console.wait_for(
            pattern, timeout or self.boot_timeout, self.stopped_reason, fail_on=BOOT_FAILURE
        )

    def wait_for(self, pattern: str | re.Pattern[str], timeout: float | None = None) -> str:
        """Wait for the pattern on the console (output after the last match); return the match."""
        return self._wait(pattern, timeout).group(0)

    def wait_ready(self, timeout: float | None = None) -> Ready:
        """Wait for this boot's readiness line (boot-complete.target reached and blessed)."""
        return Ready.from_match(self._wait(READY_PATTERN, timeout))

    def run(self, command: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
        """Run a shell command line in the guest over SSH (see SshTarget.run)."""
        return self.ssh.run(command, **kwargs)  # type: ignore[arg-type]

    def wait_ssh(self, timeout: float | None = None) -> None:
        self.ssh.wait(timeout or self.boot_timeout)

    def reboot(self) -> None:
        """Ask the guest to reboot cleanly; follow with wait_ready()."""
        # The connection drops as the guest goes down; its exit status means nothing.
        try:
            self.ssh.run("systemctl reboot", check=False, timeout=30)
        except subprocess.TimeoutExpired:
            pass

    def hard_reset(self) -> None:
        """Reset the machine like its reset switch: no shutdown, unsynced writes lost.
        Later waits see only what the next boot prints."""
        self.console.skip_past_output()
        self.monitor.hard_reset()

    def power_off(self, timeout: float = 120.0) -> int:
        """Press the power button and wait for the guest to shut down and QEMU to exit."""
        self.monitor.power_button()
        assert self._process is not None
        try:
            return self._process.wait(timeout)
        finally:
            self.stop()

    def stop(self) -> None:
        """Quit QEMU at once (the VM's files stay; start() boots it again)."""
        if self._monitor is not None:
            if self._process is not None and self._process.poll() is None:
                self._monitor.quit()
            self._monitor.close()
            self._monitor = None
        if self._process is not None:
            try:
                self._process.wait(15)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None
        if self._running is not None:
            budget.stopped(self._running)
            self._running = None

    def close(self) -> None:
        self.stop()
        if self.swtpm is not None:
            self.swtpm.stop()
        self._runtime.cleanup()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()
