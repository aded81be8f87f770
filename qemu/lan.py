"""A private Ethernet between the lab's VMs: a VDE switch (Debian's vde2) on this machine.

Each VM gets a third NIC plugged into the switch's socket directory (QEMU's ``-netdev
vde``); the switch is a user process bridging those sockets and nothing else, so the
VMs reach one another and nothing of this machine's own network. User-mode networking
stays as it is for each VM's SSH and the fleet server.

The guest's image gives DHCP to every ``en*`` NIC (80-berth-dhcp.network) and no DHCP
server answers here, so the LAN NIC gets a static address from a systemd credential,
``network.network.10-berth-lan``: systemd-network-generator (enabled by Debian's
preset) writes it to /run/systemd/network/, where it matches the NIC by its MAC and,
sorting before 80-, wins over the DHCP file.
"""

from __future__ import annotations

import ipaddress
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

SUBNET = ipaddress.IPv4Network("10.77.0.0/24")
CREDENTIAL = "network.network.10-berth-lan"
VDE_SWITCH = "vde_switch"


def address(index: int) -> str:
    """The LAN address of the VM on the switch's port ``index``."""
    return str(SUBNET.network_address + 10 + index)


@dataclass(frozen=True)
class LanPort:
    """One VM's NIC on the switch: the switch's socket directory and the NIC's address."""

    switch: Path
    index: int  # 1..99: the MAC's last byte and the address 10.77.0.<10 + index>

    def __post_init__(self) -> None:
        if not 1 <= self.index <= 99:
            raise ValueError(f"LAN port index must be 1 to 99, got {self.index}")

    @property
    def mac(self) -> str:
        return f"52:54:00:77:00:{self.index:02x}"

    @property
    def address(self) -> str:
        return address(self.index)

    def credential(self) -> bytes:
        """The .network file giving this NIC its static address (no gateway: the LAN
        routes nowhere)."""
        return (f"[Match]\nMACAddress={self.mac}\n\n[Network]\nAddress={self.address}/{SUBNET.prefixlen}\n"
                "LinkLocalAddressing=no\nIPv6AcceptRA=no\n").encode()


class VdeSwitch:
    """``vde_switch`` in the foreground, owned by this process; stdin is kept open (it
    exits at its end of file) and closing it ends the switch."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._process: subprocess.Popen[bytes] | None = None

    def port(self, index: int) -> LanPort:
        return LanPort(self.directory, index)

    def start(self, timeout: float = 10.0) -> Self:
        self.directory.parent.mkdir(parents=True, exist_ok=True)
        log = (self.directory.parent / f"{self.directory.name}.log").open("ab")
        self._process = subprocess.Popen([VDE_SWITCH, "--sock", str(self.directory)],
                                         stdin=subprocess.PIPE, stdout=log, stderr=log)
        log.close()
        deadline = time.monotonic() + timeout
        while not (self.directory / "ctl").exists():
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{VDE_SWITCH} did not come up in {self.directory} (is vde2 installed?)")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        if self._process is None:
            return
        if self._process.stdin is not None:
            self._process.stdin.close()
        try:
            self._process.wait(5)
        except subprocess.TimeoutExpired:
            self._process.terminate()
            self._process.wait(5)
        self._process = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.stop()
