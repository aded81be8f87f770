"""The QEMU command line a berth VM gets: isolation, forwards, credentials, firmware."""

from __future__ import annotations

import base64
import uuid
from pathlib import Path

import pytest

from qemu.lan import CREDENTIAL as LAN_CREDENTIAL
from qemu.lan import LanPort, VdeSwitch
from qemu.machine import (
    HOST_SERVICES_ADDRESS,
    METADATA_ADDRESS,
    OVMF_CODE,
    OVMF_CODE_SECURE_BOOT,
    Accel,
    Console,
    Forward,
    Machine,
    qemu_command,
    smbios_credential,
)


def machine(**overrides: object) -> Machine:
    fields: dict[str, object] = {
        "disk": Path("/vm/disk.qcow2"),
        "efi_vars": Path("/vm/efivars.fd"),
        "accel": Accel.TCG,
        "system_uuid": uuid.UUID("12345678-1234-5678-1234-567812345678"),
        "serial_log": Path("/vm/serial.log"),
        "qmp_socket": Path("/run/vm/qmp.sock"),
    }
    fields.update(overrides)
    return Machine(**fields)  # type: ignore[arg-type]


def option(argv: list[str], flag: str) -> list[str]:
    return [argv[i + 1] for i, arg in enumerate(argv) if arg == flag]


def test_network_is_restricted_and_forwards_bind_loopback_only() -> None:
    argv = qemu_command(machine(forwards=(Forward(2222, 22), Forward(8443, 443)), host_services={80: 8080}))
    (netdev,) = option(argv, "-netdev")
    parts = netdev.split(",")
    assert parts[0] == "user" and "restrict=on" in parts
    assert "hostfwd=tcp:127.0.0.1:2222-:22" in parts
    assert "hostfwd=tcp:127.0.0.1:8443-:443" in parts
    (guestfwd,) = [p for p in parts if p.startswith("guestfwd=")]
    assert guestfwd == f"guestfwd=tcp:{HOST_SERVICES_ADDRESS}:80-cmd:socat STDIO TCP:127.0.0.1:8080"


def test_metadata_service_has_its_own_link_local_nic_and_the_first_is_unchanged() -> None:
    plain = qemu_command(machine(forwards=(Forward(2222, 22),), host_services={80: 8080}))
    argv = qemu_command(machine(forwards=(Forward(2222, 22),), host_services={80: 8080}, metadata_service=9999))
    first, second = option(argv, "-netdev")
    assert option(plain, "-netdev") == [first]
    parts = second.split(",")
    assert parts[:4] == ["user", "id=net1", "restrict=on", "net=169.254.0.0/16"]
    assert parts[4:] == [f"guestfwd=tcp:{METADATA_ADDRESS}:80-cmd:socat STDIO TCP:127.0.0.1:9999"]
    assert option(argv, "-device").count("virtio-net-pci,netdev=net1") == 1
    assert "hostfwd" not in second  # nothing of the host is reachable through it but the service


def test_the_lan_is_a_third_nic_on_the_vde_switch_with_its_address_as_a_credential() -> None:
    plain = qemu_command(machine(forwards=(Forward(2222, 22),), metadata_service=9999))
    port = LanPort(Path("/run/lab/lan"), 2)
    argv = qemu_command(machine(forwards=(Forward(2222, 22),), metadata_service=9999, lan=port))
    # The NICs before it keep their places: the guest names them by PCI slot.
    assert option(argv, "-netdev")[:2] == option(plain, "-netdev")
    assert option(argv, "-netdev")[2] == "vde,id=net2,sock=/run/lab/lan"
    devices = option(argv, "-device")
    assert devices.index("virtio-net-pci,netdev=net2,mac=52:54:00:77:00:02") == \
        devices.index("virtio-net-pci,netdev=net1") + 1
    (network,) = [base64.b64decode(a.partition(f":{LAN_CREDENTIAL}=")[2]).decode()
                  for a in option(argv, "-smbios") if f":{LAN_CREDENTIAL}=" in a]
    assert "MACAddress=52:54:00:77:00:02" in network and "Address=10.77.0.12/24" in network
    assert "Gateway" not in network and "DHCP" not in network
    with pytest.raises(ValueError):
        LanPort(Path("/run/lab/lan"), 0)


def test_the_vde_switch_makes_its_socket_directory_and_ends_with_its_owner(tmp_path: Path) -> None:
    switch = VdeSwitch(tmp_path / "lan")
    with switch:
        assert (tmp_path / "lan" / "ctl").exists()
        assert switch.port(1).switch == tmp_path / "lan"
    assert not (tmp_path / "lan" / "ctl").exists()


def test_system_info_is_smbios_type_1_as_a_cloud_shows_it() -> None:
    argv = qemu_command(machine(system_info={"manufacturer": "Amazon EC2", "product": "t3.micro,x"}))
    assert option(argv, "-smbios") == ["type=1,manufacturer=Amazon EC2,product=t3.micro,,x"]
    assert option(qemu_command(machine()), "-smbios") == []
    with pytest.raises(ValueError):
        qemu_command(machine(system_info={"bad=name": "x"}))


def test_credentials_round_trip_through_smbios_base64() -> None:
    value = b"ssh-ed25519 AAAA,with=commas and\nnewline"
    argv = qemu_command(machine(credentials={"ssh.authorized_keys.root": value, "berth.group": b"canary"}))
    smbios = option(argv, "-smbios")
    assert len(smbios) == 2
    decoded = {}
    for arg in smbios:
        assert arg.startswith("type=11,value=io.systemd.credential.binary:")
        name, _, encoded = arg.removeprefix("type=11,value=io.systemd.credential.binary:").partition("=")
        assert "," not in encoded  # QEMU's option parser would split there
        decoded[name] = base64.b64decode(encoded)
    assert decoded == {"ssh.authorized_keys.root": value, "berth.group": b"canary"}


@pytest.mark.parametrize("name", ["", "a=b", "a,b", "a/b"])
def test_bad_credential_names_are_refused(name: str) -> None:
    with pytest.raises(ValueError):
        smbios_credential(name, b"x")


def test_firmware_is_shared_read_only_and_variables_are_the_vms_own() -> None:
    argv = qemu_command(machine())
    pflash = [d for d in option(argv, "-drive") if d.startswith("if=pflash")]
    assert pflash == [
        f"if=pflash,format=raw,readonly=on,file={OVMF_CODE}",
        "if=pflash,format=raw,file=/vm/efivars.fd",
    ]
    assert option(argv, "-uuid") == ["12345678-1234-5678-1234-567812345678"]
    assert option(argv, "-machine") == ["q35,smm=off"] and option(argv, "-global") == []


def test_secure_boot_boots_ovmfs_smm_build_with_a_secure_variable_store() -> None:
    argv = qemu_command(machine(secure_boot=True))
    assert option(argv, "-machine") == ["q35,smm=on"]
    assert option(argv, "-global") == ["driver=cfi.pflash01,property=secure,value=on", "ICH9-LPC.disable_s3=1"]
    pflash = [d for d in option(argv, "-drive") if d.startswith("if=pflash")]
    assert pflash == [
        f"if=pflash,format=raw,readonly=on,file={OVMF_CODE_SECURE_BOOT}",
        "if=pflash,format=raw,file=/vm/efivars.fd",  # fresh: a copy of the blank template, setup mode
    ]
    assert OVMF_CODE_SECURE_BOOT.exists()


def test_accelerator_choice_picks_cpu_model() -> None:
    assert qemu_command(machine(accel=Accel.TCG))[4:8] == ["-accel", "tcg", "-cpu", "max"]
    assert qemu_command(machine(accel=Accel.KVM))[4:8] == ["-accel", "kvm", "-cpu", "host"]


def test_disks_by_format_and_boot_order() -> None:
    argv = qemu_command(machine(data_disk=Path("/data.raw")))
    drives = [d for d in option(argv, "-drive") if not d.startswith("if=pflash")]
    assert drives == [
        "if=none,id=disk0,file=/vm/disk.qcow2,format=qcow2,discard=unmap",
        "if=none,id=disk1,file=/data.raw,format=raw,discard=unmap",
    ]
    assert "virtio-blk-pci,drive=disk0,bootindex=1" in option(argv, "-device")


def test_console_goes_to_log_or_terminal() -> None:
    logged = qemu_command(machine())
    assert option(logged, "-chardev") == ["file,id=serial0,path=/vm/serial.log"]
    assert option(logged, "-serial") == ["chardev:serial0"]
    assert option(logged, "-qmp") == ["unix:/run/vm/qmp.sock,server=on,wait=off"]
    interactive = qemu_command(machine(console=Console.STDIO, qmp_socket=None))
    assert "-nographic" in interactive and "-chardev" not in interactive
    assert option(interactive, "-serial") == ["mon:stdio"]
    with pytest.raises(ValueError):
        qemu_command(machine(serial_log=None))


@pytest.mark.parametrize("text", ["22", "a:22", "0:22", "2222:70000", ":22"])
def test_forward_syntax_errors(text: str) -> None:
    with pytest.raises(ValueError):
        Forward.parse(text)


def test_forward_parses_host_then_guest() -> None:
    assert Forward.parse("2222:22") == Forward(host_port=2222, guest_port=22)


def test_a_tpm_is_swtpm_s_socket_behind_a_crb_device_and_only_when_asked() -> None:
    argv = qemu_command(machine(tpm_socket=Path("/run/vm/swtpm.sock")))
    (chardev,) = [c for c in option(argv, "-chardev") if c.startswith("socket,")]
    assert chardev == "socket,id=chrtpm,path=/run/vm/swtpm.sock"
    assert option(argv, "-tpmdev") == ["emulator,id=tpm0,chardev=chrtpm"]
    assert "tpm-crb,tpmdev=tpm0" in option(argv, "-device")
    plain = qemu_command(machine())
    assert "-tpmdev" not in plain and not any(d.startswith("tpm") for d in option(plain, "-device"))


@pytest.mark.parametrize("overrides", [{}, {"secure_boot": True}, {"console": Console.STDIO}])
def test_every_vm_has_a_watchdog_that_resets_it_and_a_reset_boots_again(overrides: dict[str, object]) -> None:
    """A hung guest is reset by its watchdog (the image arms it) and boots again, so
    boot counting takes over and the harness keeps reading the same console."""
    argv = qemu_command(machine(**overrides))
    assert "i6300esb" in option(argv, "-device")
    assert option(argv, "-action") == ["watchdog=reset"]
    assert "-no-reboot" not in argv and "-no-shutdown" not in argv
