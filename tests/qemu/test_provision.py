"""First-boot provisioning in QEMU, one source per shared boot (no boot of its own):
- the docker host boots with a NoCloud seed (a real ISO 9660 volume labelled cidata);
- the podman host boots as an EC2 instance (SMBIOS "Amazon EC2") and gets its
  declaration from the FAKE IMDSv2 of tests/provision/fake_clouds.py, served to the
  guest at 169.254.169.254:80 on a link-local NIC of its own (qemu/machine.py).
Each becomes what it declares: host name, SSH key, fleet group, a container that answers.
Last, the docker host is given a bad declaration and rebooted (the one reboot of
this file): it comes up on the declaration it kept; then a container is dropped.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from qemu.milestones import page_answers
from qemu.seed import (
    EXAMPLE_ARCHIVE,
    EXAMPLE_CONTAINER,
    EXAMPLE_GROUP,
    EXAMPLE_PAGE,
    EXAMPLE_PORT,
    example_user_data,
    write_seed,
)
from qemu.ssh import SshTarget, ensure_key

pytestmark = pytest.mark.slow

FETCH = f"python3 -c \"import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:{EXAMPLE_PORT}/').read().decode(), end='')\""
# After the boot is ready: the archive loads, then the container starts.
ANSWER_WAIT_S = 300


def assert_provisioned(host: Any, source: str) -> dict[str, Any]:
    vm, how = host.vm, host.provisioning
    assert vm.run("hostname").stdout.strip() == how.hostname
    # The declared key logs in (the harness's own key came as an SMBIOS credential).
    assert SshTarget(vm.ssh_port, host.declared_key).run("id -u").stdout.strip() == "0"
    status: dict[str, Any] = json.loads(vm.run("berth agent status --json").stdout)["provision"]
    assert (status["source"], status["applied"], status["errors"]) == (source, "declared", [])
    assert status["containers"] == [EXAMPLE_CONTAINER]
    assert f"group: {EXAMPLE_GROUP}" in vm.run("cat /var/lib/berth/agent.yaml").stdout
    assert f"provisioned: declared from {source}" in vm.run("journalctl -b -u berth-provision --no-pager").stdout
    unit = f"berth-container-{EXAMPLE_CONTAINER}"
    deadline = time.monotonic() + ANSWER_WAIT_S
    while "answering" not in host.milestones.seen and time.monotonic() < deadline:
        time.sleep(2)  # the host's watcher fetches the page through a forwarded port
    assert "answering" in host.milestones.seen, vm.run(f"systemctl status {unit} --no-pager", check=False).stdout
    assert vm.run(FETCH).stdout.strip() == EXAMPLE_PAGE  # and from inside the guest
    assert vm.run(f"systemctl is-active {unit}").stdout.strip() == "active"
    return status


def test_seed_gives_hostname_key_group_and_a_running_container(booted_host: Any) -> None:
    assert_provisioned(booted_host, "nocloud")


def test_ec2_imdsv2_gives_hostname_key_group_and_a_running_container(booted_podman_host: Any) -> None:
    host = booted_podman_host
    vm, cloud = host.vm, host.provisioning.cloud
    # What berth's DMI check reads, as on EC2.
    assert vm.run("cat /sys/class/dmi/id/sys_vendor").stdout.strip() == "Amazon EC2"
    status = assert_provisioned(host, "ec2")
    assert status["instance_id"] == cloud.instance_id
    # IMDSv2 as AWS enforces it: the session token first, every GET with it, nothing refused.
    assert cloud.requests[0] == "PUT /latest/api/token", cloud.requests
    assert "GET /latest/user-data" in cloud.requests and cloud.refused == []
    # No config volume: the archive came from its URL and is kept under its sha256.
    digest = host.provisioning.archive_sha256
    assert vm.run(f"test -s /var/lib/berth/host/archives/sha256-{digest}.tar", check=False).returncode == 0


def test_the_metadata_nic_leaves_the_first_one_as_it_was(booted_podman_host: Any, host_service: Any) -> None:
    vm = booted_podman_host.vm
    fetch = "import urllib.request,sys; sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=20).read().decode())"
    assert vm.run(f"python3 -c '{fetch}' {host_service.guest_url}").stdout.encode() == host_service.body
    routes = vm.run("ip -4 -o addr show").stdout
    assert "10.0.2.15/24" in routes and "169.254." in routes


def _replace_seed(host: Any, user_data: str) -> None:
    """Write a new NoCloud seed over the attached one, in place (the virtio disk keeps
    its size: the new volume is padded to it), and make the guest read it afresh."""
    seed = host.provisioning.seed
    size = seed.stat().st_size
    new = write_seed(seed.with_name("seed-next.iso"), user_data.encode())
    data = new.read_bytes()
    assert len(data) <= size, f"the new seed ({len(data)} B) must fit the attached disk ({size} B)"
    with seed.open("r+b") as disk:  # same file QEMU has open, so the guest's disk changes
        disk.write(data + bytes(size - len(data)))
    host.vm.run("sync; echo 3 > /proc/sys/vm/drop_caches; blockdev --flushbufs $(readlink -f /dev/disk/by-label/cidata)")


def _provision_again(host: Any) -> dict[str, Any]:
    """Run the boot's provisioning unit again (the same unit and command a boot runs, so
    no reboot is spent on it: the reboot path of a declared container is scenario 5's)."""
    host.vm.run("systemctl restart berth-provision.service", check=False)
    return dict(json.loads(host.vm.run("berth agent status --json").stdout)["provision"])


def _wait_answering(host: Any) -> bool:
    """The declared container's page through the host's forwarded port, within ANSWER_WAIT_S."""
    deadline = time.monotonic() + ANSWER_WAIT_S
    while not page_answers(host.milestones.port, EXAMPLE_PAGE):
        if time.monotonic() >= deadline:
            return False
        time.sleep(2)
    return True


def test_a_bad_declaration_boots_on_the_last_good_and_a_dropped_container_is_removed(
    booted_host: Any, busybox_archive: tuple[Path, str], tmp_path: Path,
) -> None:
    """Last on the docker host (nothing after test_provision.py uses it): it reboots it
    and changes what it is given. One reboot, for the bad declaration: what a boot
    does with one is the case that matters (the host must come up on what it kept)."""
    host, vm = booted_host, booted_host.vm
    declared_login = SshTarget(vm.ssh_port, host.declared_key)
    declared_key = ensure_key(host.declared_key).decode().strip()  # the public half, as first declared
    unit = f"berth-container-{EXAMPLE_CONTAINER}"
    _, tag = busybox_archive

    # A declaration with a mistake in it, beside a new host name and a new key (none of
    # it may apply), on a seed without the archive (the container must come from what
    # the host kept on /var), and a real reboot.
    other_key = tmp_path / "other_ed25519"
    bad = example_user_data(ensure_key(other_key).decode().strip(), tag, hostname="berth-bad")
    assert "restart: always" in bad
    _replace_seed(host, bad.replace("restart: always", "restrat: always"))
    boot_id = vm.run("cat /proc/sys/kernel/random/boot_id").stdout
    console_before = len(vm.state.serial_log.read_bytes())
    vm.console.skip_past_output()  # the waits below see only the next boot
    started = time.monotonic()
    vm.reboot()
    ready = vm.wait_ready()
    vm.wait_ssh()
    to_ssh = time.monotonic() - started
    answered = _wait_answering(host)
    print(f"\nreboot with a bad declaration: BERTH-READY at {ready.uptime_s:.1f} s of guest uptime; "
          f"SSH {to_ssh:.1f} s and the kept container answering {time.monotonic() - started:.1f} s "
          "after `systemctl reboot` (host clock)")
    console = vm.state.serial_log.read_bytes()[console_before:].decode(errors="replace")
    assert "berth-provision: error: " in console and "unknown key 'restrat'" in console
    assert "berth-provision: provisioned: last good from nocloud" in console
    assert vm.run("cat /proc/sys/kernel/random/boot_id").stdout != boot_id  # another boot
    # Reachable as before: the host name and the key it had, not the bad declaration's.
    assert vm.run("hostname").stdout.strip() == host.provisioning.hostname
    assert declared_login.run("id -u").stdout.strip() == "0"
    refused = SshTarget(vm.ssh_port, other_key).run("true", check=False)
    assert refused.returncode == 255, refused
    journal = vm.run("journalctl -b -u berth-provision --no-pager -o cat").stdout
    assert "unknown key 'restrat'" in journal and "provisioned: last good from nocloud" in journal
    assert vm.run("systemctl is-failed berth-provision", check=False).stdout.strip() == "failed"
    text = vm.run("berth agent status").stdout
    assert "provision: last good from nocloud" in text and "unknown key 'restrat'" in text, text
    status = dict(json.loads(vm.run("berth agent status --json").stdout)["provision"])
    assert status["applied"] == "last good" and status["containers"] == [EXAMPLE_CONTAINER], status
    assert len(status["errors"]) == 1 and "restrat" in status["errors"][0], status
    assert f"group: {EXAMPLE_GROUP}" in vm.run("cat /var/lib/berth/agent.yaml").stdout
    # The kept declaration's container, started at this boot from the kept archive.
    assert answered, vm.run(f"systemctl status {unit} --no-pager", check=False).stdout
    assert vm.run(f"systemctl is-active {unit}").stdout.strip() == "active"
    assert vm.run(FETCH).stdout.strip() == EXAMPLE_PAGE
    kept = f"/var/lib/berth/host/archives/{EXAMPLE_ARCHIVE}"  # the seed no longer holds it
    assert f"docker load -i {kept}" in vm.run(f"systemctl cat {unit}").stdout
    assert vm.run(f"test -s {kept}", check=False).returncode == 0

    # A good declaration without the container (no boot: the same unit and command a
    # boot runs): it is stopped and removed, unit and all.
    _replace_seed(host, f"""#cloud-config
hostname: {host.provisioning.hostname}
ssh_authorized_keys: ["{declared_key}"]
berth:
  agent:
    group: {EXAMPLE_GROUP}
""")
    status = _provision_again(host)
    assert (status["applied"], status["errors"], status["containers"]) == ("declared", [], []), status
    assert vm.run("systemctl is-active berth-provision").stdout.strip() == "active"
    assert vm.run(f"systemctl cat {unit}", check=False).returncode != 0  # no unit left
    # Stopped and forgotten: not left behind among the failed units.
    assert vm.run(f"systemctl is-active {unit}", check=False).stdout.strip() in ("inactive", "unknown")
    assert unit not in vm.run("systemctl list-units --failed --plain --no-legend").stdout
    assert vm.run(f"docker ps -a --filter name=^{EXAMPLE_CONTAINER}$ --format '{{{{.Names}}}}'").stdout.strip() == ""
    assert vm.run(FETCH, check=False).returncode != 0  # nothing answers on its port
    assert vm.run("hostname").stdout.strip() == host.provisioning.hostname
    assert declared_login.run("id -u").stdout.strip() == "0"
