"""A booted berth host is what berth says it is (one VM per engine, shared).

What a reboot keeps (/var, the machine ID, the slot) is proven by the end-to-end
updates and power cuts in tests/e2e, which reboot anyway.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from qemu.scenarios import manifest
from updater import contract

pytestmark = [pytest.mark.slow, pytest.mark.qemu]




def test_readiness_names_the_built_version_slot_a_and_root_hash(booted_host: Any) -> None:
    built = manifest(booted_host.artifact)
    assert booted_host.ready.version == built.version
    assert booted_host.ready.roothash == built.roothash
    assert booted_host.ready.slot == "a"
    cmdline = booted_host.vm.run("cat /proc/cmdline").stdout
    assert f"roothash={built.roothash}" in cmdline.split()


def test_root_is_dm_verity_and_read_only(booted_host: Any) -> None:
    vm = booted_host.vm
    source, options = vm.run("findmnt -no SOURCE,OPTIONS /").stdout.split()
    assert source == "/dev/mapper/root"
    assert "ro" in options.split(",")
    dm = vm.run("basename $(readlink -f /dev/mapper/root)").stdout.strip()
    assert vm.run(f"cat /sys/class/block/{dm}/dm/uuid").stdout.startswith("CRYPT-VERITY-")
    write = vm.run("touch /usr/berth-write-probe", check=False)
    assert write.returncode != 0 and "Read-only file system" in write.stderr
    # The root's blocks are hashed with the CPU's SHA instructions (the module holds
    # a reference for the verity device it hashes for), not the generic C sha256.
    assert int(vm.run("cat /sys/module/sha256_ssse3/refcnt").stdout) >= 1


def test_no_package_manager(booted_host: Any) -> None:
    for tool in ("apt", "apt-get", "dpkg"):
        found = booted_host.vm.run(f"command -v {tool}", check=False)
        assert found.returncode != 0, f"{tool} is in the image at {found.stdout.strip()}"
    leftovers = booted_host.vm.run("ls -d /var/lib/dpkg /var/lib/apt /etc/apt", check=False)
    assert leftovers.stdout == ""


def test_docker_runs_a_container_from_a_local_archive(
    booted_host: Any, busybox_archive: tuple[Path, str]
) -> None:
    archive, tag = busybox_archive
    vm = booted_host.vm
    vm.ssh.copy_in(archive, "/var/tmp/busybox.tar")
    assert tag in vm.run("docker load -i /var/tmp/busybox.tar").stdout
    out = vm.run(f"docker run --rm {tag} sh -c 'echo hello from $(uname -s) in a container'")
    assert out.stdout == "hello from Linux in a container\n"


# What the engine, swarm mode and a volume driver load; the root's modules are pruned
# (builder/mkosi/prune-modules.finalize), so each is loaded into the running kernel here.
ENGINE_MODULES = "overlay br_netfilter veth vxlan ipvlan macvlan tun wireguard nf_conntrack " \
    "nft_compat nft_masq iptable_nat ip6table_nat xt_MASQUERADE xt_conntrack xt_addrtype xt_ipvs " \
    "ip_vs_rr xfrm_user esp4 8021q dm_crypt btrfs xfs nfsv4 cifs"


def test_the_pruned_roots_modules_load_into_the_running_kernel(booted_host: Any) -> None:
    vm = booted_host.vm
    vm.run(f"modprobe -a {ENGINE_MODULES}")
    loaded = {line.split()[0] for line in vm.run("cat /proc/modules").stdout.splitlines()}
    assert set(ENGINE_MODULES.split()) <= loaded
    # Nothing the boot asked for (udev, systemd-modules-load, the engine) was missing.
    assert vm.run("systemctl is-failed systemd-modules-load.service", check=False).stdout.strip() != "failed"
    kernel = vm.run("journalctl -k -b --no-pager -o cat").stdout
    assert "Unknown symbol" not in kernel


def test_booted_uki_is_the_blessed_default_entry(booted_host: Any) -> None:
    built = manifest(booted_host.artifact)
    entries = json.loads(booted_host.vm.run("bootctl list --json=short").stdout)
    (booted,) = [e for e in entries if e.get("isSelected")]
    assert booted["id"] == contract.uki_filename(built.image_id, built.version)
    assert booted["type"] == "type2"  # a unified kernel image
    assert booted.get("isDefault") is True
    # No boot counter left on the entry: it is good (blessed), not on trial.
    assert "triesLeft" not in booted and "+" not in booted["id"]


def test_the_boot_loaders_random_seed_is_written_once_the_host_is_ready(booted_host: Any) -> None:
    # Images ship no seed (each host its own); it is written after boot-complete.target,
    # off the boot's path, so poll for it (bounded: a oneshot on a ready host).
    vm = booted_host.vm
    check = ("for i in $(seq 60); do systemctl is-active --quiet berth-boot-random-seed.service && break; "
             "sleep 2; done; systemctl is-active berth-boot-random-seed.service; "
             "stat -c %s \"$(bootctl --print-esp-path)/loader/random-seed\"")
    assert vm.run(check).stdout.split() == ["active", "32"]
    assert vm.run("systemctl show -P ActiveState systemd-boot-random-seed.service").stdout.strip() == "inactive"


def test_guest_reaches_host_service_only_through_its_fixed_address(
    booted_host: Any, host_service: Any
) -> None:
    vm = booted_host.vm
    fetch = "import urllib.request,sys; sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=20).read().decode())"
    for _ in range(3):  # each request is its own connection through the relay
        assert vm.run(f"python3 -c '{fetch}' {host_service.guest_url}").stdout.encode() == host_service.body
    # restrict=on: the user-mode gateway does not lead to the host's loopback.
    direct = vm.run(f"python3 -c '{fetch}' http://10.0.2.2:{host_service.host_port}/", check=False)
    assert direct.returncode != 0


def test_smbios_credentials_reach_the_system(booted_host: Any) -> None:
    for name, value in booted_host.credentials.items():
        assert booted_host.vm.run(f"systemd-creds --system cat {name}").stdout.strip() == value


def test_podman_variant_boots_and_runs_the_same_container(
    booted_podman_host: Any, busybox_archive: tuple[Path, str]
) -> None:
    archive, tag = busybox_archive
    vm = booted_podman_host.vm
    assert manifest(booted_podman_host.artifact).engine == "podman"
    assert vm.run("command -v docker", check=False).returncode != 0
    vm.ssh.copy_in(archive, "/var/tmp/busybox.tar")
    vm.run("podman load -i /var/tmp/busybox.tar")
    out = vm.run(f"podman run --rm {tag} sh -c 'echo hello from $(uname -s) in a container'")
    assert out.stdout == "hello from Linux in a container\n"
