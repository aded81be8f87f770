"""What a berth VM is, and the QEMU command line that makes one (pure: no I/O).

Networking is QEMU's user-mode stack with ``restrict=on``: the guest reaches
nothing outside except what is forwarded explicitly, and every forward binds
the host side to 127.0.0.1.

- ``hostfwd``: host 127.0.0.1:PORT -> guest port (SSH, a debug shell, ...).
- ``guestfwd``: the guest connects to ``HOST_SERVICES_ADDRESS``:GUEST_PORT and
  reaches 127.0.0.1:HOST_PORT on the host (e.g. the fleet server). QEMU runs
  the relay command once per connection, so HTTP clients may open as many
  connections as they like (a chardev target would be one shared stream).
- the metadata service: a cloud's link-local 169.254.169.254:80 served from a
  host 127.0.0.1 port. libslirp forwards only to addresses inside a netdev's
  ``net=``, so it gets a second user-mode NIC of its own (``net=169.254.0.0/16``,
  also ``restrict=on``) and the first NIC, its SSH forward and host services stay
  as they are. With SMBIOS type 1 saying which cloud (``system_info``), the guest
  sees what a cloud's VM sees.
- a TPM 2.0 (``tpm_socket``): swtpm's control socket as QEMU's TPM emulator backend and
  a CRB interface (what OVMF and systemd-stub measure into); the swtpm process and its
  state are the VM's (qemu/swtpm.py), so they outlive QEMU across resets and power cuts.
- a hardware watchdog (``WATCHDOG``): Intel's 6300ESB, as QEMU emulates it, resetting
  the machine when it expires.
- a private LAN between VMs (``lan``): a third NIC on a VDE switch (qemu/lan.py), its
  static address handed over as a systemd credential; the first NIC stays the VM's
  way to SSH and to host services.
"""

from __future__ import annotations

import base64
import enum
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from qemu.lan import CREDENTIAL as LAN_CREDENTIAL
from qemu.lan import LanPort

# The fixed guest-side address of host services (inside QEMU's 10.0.2.0/24).
HOST_SERVICES_ADDRESS = "10.0.2.100"
METADATA_ADDRESS = "169.254.169.254"
METADATA_NETWORK = "169.254.0.0/16"
GUEST_SSH_PORT = 22

OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
# OVMF's Secure Boot build: it needs SMM, and its variable store only SMM may write.
OVMF_CODE_SECURE_BOOT = Path("/usr/share/OVMF/OVMF_CODE_4M.secboot.fd")
# Blank variables, for either build: with the Secure Boot one that is setup mode (no PK),
# where systemd-boot enrols a signed image's keys (loader.conf secure-boot-enroll).
OVMF_VARS_TEMPLATE = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")


class Accel(enum.Enum):
    KVM = "kvm"
    TCG = "tcg"

    @property
    def args(self) -> list[str]:
        # KVM passes the host CPU through; TCG emulates the richest model it has.
        return ["-accel", "kvm", "-cpu", "host"] if self is Accel.KVM else ["-accel", "tcg", "-cpu", "max"]


class Console(enum.Enum):
    """Where the guest's serial port goes."""

    LOG = "log"  # a log file the harness reads as a stream
    STDIO = "stdio"  # the user's terminal, with QEMU's monitor on ctrl-a c


def parse_port_pair(text: str) -> tuple[int, int]:
    """``"A:B"`` as two TCP port numbers."""
    first, sep, second = text.partition(":")
    if not sep or not first.isdigit() or not second.isdigit():
        raise ValueError(f"expected PORT:PORT, got {text!r}")
    ports = int(first), int(second)
    if not all(0 < port < 65536 for port in ports):
        raise ValueError(f"port out of range in {text!r}")
    return ports


@dataclass(frozen=True)
class Forward:
    """A host 127.0.0.1 TCP port forwarded to a guest port."""

    host_port: int
    guest_port: int

    @classmethod
    def parse(cls, text: str) -> Forward:
        """``"HOST:GUEST"``."""
        return cls(*parse_port_pair(text))


@dataclass(frozen=True)
class Machine:
    """Everything QEMU needs to boot one VM; files are the VM's own state."""

    disk: Path
    efi_vars: Path
    accel: Accel
    system_uuid: uuid.UUID
    memory_mb: int = 2048
    cpus: int = 2
    console: Console = Console.LOG
    serial_log: Path | None = None
    qmp_socket: Path | None = None
    forwards: tuple[Forward, ...] = ()
    # guest port at HOST_SERVICES_ADDRESS -> host 127.0.0.1 port
    host_services: Mapping[int, int] = field(default_factory=dict)
    # systemd credentials; values are bytes so binary ones need no special case
    credentials: Mapping[str, bytes] = field(default_factory=dict)
    data_disk: Path | None = None
    # a NoCloud seed (ISO 9660, label cidata), attached read-only as a virtio disk
    seed: Path | None = None
    relay_command: tuple[str, ...] = ("socat", "STDIO")
    # OVMF's Secure Boot build (SMM on, secure pflash); efi_vars decides the mode.
    secure_boot: bool = False
    # host 127.0.0.1 port the guest reaches as METADATA_ADDRESS:80 (a second NIC)
    metadata_service: int | None = None
    # SMBIOS type 1 fields (manufacturer, product, ...): the guest's /sys/class/dmi/id
    system_info: Mapping[str, str] = field(default_factory=dict)
    # a NIC on the lab's VDE switch, after net0/net1 (the guest names NICs by PCI slot)
    lan: LanPort | None = None
    # swtpm's control socket (qemu/swtpm.py): the guest gets a TPM 2.0
    tpm_socket: Path | None = None


def smbios_credential(name: str, value: bytes) -> str:
    """The -smbios argument handing one systemd credential to the guest.

    The base64 ("binary") form is used for every value: it has no commas, which
    QEMU's option parser would otherwise need doubled, and carries any bytes.
    """
    if not name or any(c in name for c in "=,/ \n"):
        raise ValueError(f"invalid credential name {name!r}")
    encoded = base64.b64encode(value).decode("ascii")
    return f"type=11,value=io.systemd.credential.binary:{name}={encoded}"


def _guestfwd(machine: Machine, address: str, guest_port: int, host_port: int) -> str:
    relay = " ".join((*machine.relay_command, f"TCP:127.0.0.1:{host_port}"))
    return f"guestfwd=tcp:{address}:{guest_port}-cmd:{relay}"


def netdev(machine: Machine) -> str:
    parts = ["user", "id=net0", "restrict=on"]
    parts += [f"hostfwd=tcp:127.0.0.1:{f.host_port}-:{f.guest_port}" for f in machine.forwards]
    for guest_port, host_port in sorted(machine.host_services.items()):
        parts.append(_guestfwd(machine, HOST_SERVICES_ADDRESS, guest_port, host_port))
    return ",".join(parts)


def metadata_netdev(machine: Machine) -> str | None:
    if machine.metadata_service is None:
        return None
    return ",".join(["user", "id=net1", "restrict=on", f"net={METADATA_NETWORK}",
                     _guestfwd(machine, METADATA_ADDRESS, 80, machine.metadata_service)])


def smbios_system(fields: Mapping[str, str]) -> str:
    """The -smbios type=1 argument; QEMU's option parser needs a value's commas doubled."""
    if any(not name.isalpha() for name in fields):
        raise ValueError(f"invalid SMBIOS type 1 field names: {sorted(fields)}")
    return ",".join(["type=1", *(f"{name}={value.replace(',', ',,')}" for name, value in sorted(fields.items()))])


def _drive(path: Path, name: str, bootindex: int | None) -> list[str]:
    fmt = "qcow2" if path.suffix == ".qcow2" else "raw"
    device = f"virtio-blk-pci,drive={name}" + (f",bootindex={bootindex}" if bootindex else "")
    return [
        "-drive", f"if=none,id={name},file={path},format={fmt},discard=unmap",
        "-device", device,
    ]


def firmware(secure_boot: bool) -> Path:
    return OVMF_CODE_SECURE_BOOT if secure_boot else OVMF_CODE


def firmware_globals(secure_boot: bool) -> list[str]:
    """What OVMF's Secure Boot build needs besides SMM: the variable flash writable only
    from SMM (else the OS could rewrite db), and no S3 (the SMM build does not support it)."""
    if not secure_boot:
        return []
    return ["-global", "driver=cfi.pflash01,property=secure,value=on",
            "-global", "ICH9-LPC.disable_s3=1"]


def tpm_arguments(socket: Path | None) -> list[str]:
    """A TPM 2.0 backed by swtpm at ``socket``, as a CRB device (TPM 2.0's own interface)."""
    if socket is None:
        return []
    return ["-chardev", f"socket,id=chrtpm,path={socket}",
            "-tpmdev", "emulator,id=tpm0,chardev=chrtpm",
            "-device", "tpm-crb,tpmdev=tpm0"]


# Every VM has a hardware watchdog, as a real host should: the image's PID 1 arms it from
# the initrd on, and a guest that hangs is reset like a power cut, so boot counting
# takes over and the harness's waits see the next boot on the same console.
WATCHDOG = ("-device", "i6300esb", "-action", "watchdog=reset")


def qemu_command(machine: Machine, binary: str = "qemu-system-x86_64") -> list[str]:
    """The full argv for QEMU booting ``machine`` under OVMF."""
    argv = [
        binary,
        "-machine", "q35,smm=on" if machine.secure_boot else "q35,smm=off",
        *firmware_globals(machine.secure_boot),
        # No default CD-ROM, VGA or parallel port: fewer devices for the
        # firmware and the kernel to probe; everything is added explicitly.
        "-nodefaults",
        *machine.accel.args,
        "-smp", str(machine.cpus),
        "-m", f"{machine.memory_mb}M",
        "-uuid", str(machine.system_uuid),
        "-drive", f"if=pflash,format=raw,readonly=on,file={firmware(machine.secure_boot)}",
        "-drive", f"if=pflash,format=raw,file={machine.efi_vars}",
        *_drive(machine.disk, "disk0", 1),
        "-device", "virtio-rng-pci",
        *tpm_arguments(machine.tpm_socket),
        "-netdev", netdev(machine),
        "-device", "virtio-net-pci,netdev=net0",
    ]
    if (metadata := metadata_netdev(machine)) is not None:
        argv += ["-netdev", metadata, "-device", "virtio-net-pci,netdev=net1"]
    credentials = dict(machine.credentials)
    if machine.lan is not None:
        argv += ["-netdev", f"vde,id=net2,sock={machine.lan.switch}",
                 "-device", f"virtio-net-pci,netdev=net2,mac={machine.lan.mac}"]
        credentials[LAN_CREDENTIAL] = machine.lan.credential()
    if machine.system_info:
        argv += ["-smbios", smbios_system(machine.system_info)]
    if machine.data_disk is not None:
        argv += _drive(machine.data_disk, "disk1", None)
    if machine.seed is not None:
        argv += ["-drive", f"if=none,id=seed,file={machine.seed},format=raw,readonly=on",
                 "-device", "virtio-blk-pci,drive=seed"]
    for name, value in sorted(credentials.items()):
        argv += ["-smbios", smbios_credential(name, value)]
    # Last of the PCI devices, so the others keep the slots (and the guest its NIC names).
    argv += WATCHDOG
    if machine.console is Console.STDIO:
        # serial and monitor multiplexed on the terminal (ctrl-a c switches)
        argv += ["-nographic", "-serial", "mon:stdio"]
    else:
        if machine.serial_log is None:
            raise ValueError("a logged console needs serial_log")
        argv += [
            "-chardev", f"file,id=serial0,path={machine.serial_log}",
            "-serial", "chardev:serial0",
            "-display", "none",
            "-monitor", "none",
        ]
    if machine.qmp_socket is not None:
        argv += ["-qmp", f"unix:{machine.qmp_socket},server=on,wait=off"]
    return argv
