"""Run a VM in the foreground with its serial console on the user's terminal."""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

from cli.errors import UserError
from qemu.accel import choose_accel
from qemu.harness import build_machine, free_port
from qemu.machine import (
    GUEST_SSH_PORT,
    HOST_SERVICES_ADDRESS,
    Console,
    Forward,
    parse_port_pair,
    qemu_command,
)
from qemu.seed import seed_for_user_data
from qemu.ssh import SshTarget
from qemu.state import VmState, resolve_disk
from qemu.swtpm import Swtpm


def _port_pairs(texts: list[str], option: str) -> list[tuple[int, int]]:
    try:
        return [parse_port_pair(text) for text in texts]
    except ValueError as error:
        raise UserError(f"{option}: {error}") from None


def _credentials(texts: list[str]) -> dict[str, str]:
    credentials = {}
    for text in texts:
        name, sep, value = text.partition("=")
        if not sep or not name:
            raise UserError(f"--credential must be NAME=VALUE, got {text!r}")
        credentials[name] = value
    return credentials


def run_interactive(args: argparse.Namespace) -> int:
    base_disk = resolve_disk(args.artifact)
    if args.data_disk is not None and not args.data_disk.is_file():
        raise UserError(f"--data-disk {args.data_disk} does not exist")
    if args.memory < 256 or args.cpus < 1:
        raise UserError("--memory must be at least 256 MiB and --cpus at least 1")
    forwards = tuple(Forward(*pair) for pair in _port_pairs(args.forward, "--forward"))
    services = dict(_port_pairs(args.service, "--service"))
    ssh_port = free_port()
    with tempfile.TemporaryDirectory(prefix="berth-vm-") as scratch:
        state = VmState(args.state or Path(scratch))
        accel = choose_accel()
        machine = build_machine(
            state,
            base_disk,
            accel=accel,
            console=Console.STDIO,
            memory_mb=args.memory,
            cpus=args.cpus,
            forwards=(Forward(ssh_port, GUEST_SSH_PORT), *forwards),
            host_services=services,
            credentials=_credentials(args.credential),
            data_disk=args.data_disk,
            seed=seed_for_user_data(args.user_data, Path(scratch) / "seed.iso") if args.user_data else None,
            secure_boot=args.secure_boot,
            tpm_socket=Path(scratch) / "swtpm.sock" if args.tpm else None,
        )
        tpm = Swtpm(state.tpm, machine.tpm_socket) if machine.tpm_socket else None
        ssh = shlex.join(SshTarget(ssh_port, state.private_key).argv())
        print(
            f"berth vm: {base_disk} under {accel.value}; ctrl-a x quits\n"
            f"  ssh: {ssh}\n"
            f"  host services in the guest: {HOST_SERVICES_ADDRESS}:PORT (--service)\n"
            f"  VM files: {state.directory}" + ("" if args.state else " (removed on exit)"),
            file=sys.stderr,
        )
        if tpm is not None:
            tpm.start()
        try:
            return subprocess.run(qemu_command(machine), check=False).returncode
        finally:
            if tpm is not None:
                tpm.stop()
