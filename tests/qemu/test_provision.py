"""First-boot provisioning in QEMU: the docker host boots with a NoCloud seed (a
real ISO 9660 volume labelled cidata) and becomes what it declares."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from qemu.seed import (
    EXAMPLE_CONTAINER,
    EXAMPLE_GROUP,
    EXAMPLE_HOSTNAME,
    EXAMPLE_PAGE,
    EXAMPLE_PORT,
)
from qemu.ssh import SshTarget

pytestmark = pytest.mark.slow

FETCH = f"python3 -c \"import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:{EXAMPLE_PORT}/').read().decode(), end='')\""


def test_seed_gives_hostname_key_group_and_a_running_container(booted_host: Any) -> None:
    vm = booted_host.vm
    assert vm.run("hostname").stdout.strip() == EXAMPLE_HOSTNAME
    # The declared key logs in (the harness's own key came as an SMBIOS credential).
    assert SshTarget(vm.ssh_port, booted_host.declared_key).run("id -u").stdout.strip() == "0"
    status = json.loads(vm.run("berth agent status --json").stdout)["provision"]
    assert (status["source"], status["applied"], status["errors"]) == ("nocloud", "declared", [])
    assert status["containers"] == [EXAMPLE_CONTAINER]
    assert f"group: {EXAMPLE_GROUP}" in vm.run("cat /var/lib/berth/agent.yaml").stdout
    assert "provisioned: declared from nocloud" in vm.run("journalctl -b -u berth-provision --no-pager").stdout
    deadline = time.monotonic() + 180  # the archive loads, then the container starts
    while True:
        answer = vm.run(FETCH, check=False)
        if answer.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(3)
    assert answer.stdout.strip() == EXAMPLE_PAGE, vm.run(
        f"systemctl status berth-container-{EXAMPLE_CONTAINER} --no-pager", check=False).stdout
    assert vm.run(f"systemctl is-active berth-container-{EXAMPLE_CONTAINER}").stdout.strip() == "active"
