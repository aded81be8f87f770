"""`berth vm`: boot an artifact in QEMU on an interactive serial console."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "vm",
        help="boot a built image in QEMU on this terminal (ctrl-a x quits)",
        description=(
            "Boot a berth build output (or a disk image) under OVMF with the serial "
            "console on this terminal; ctrl-a x quits, ctrl-a c toggles QEMU's monitor. "
            "The build output is never written: the VM runs on a copy-on-write overlay."
        ),
    )
    parser.add_argument("artifact", type=Path, metavar="ARTIFACT_DIR_OR_DISK")
    parser.add_argument("--memory", type=int, default=2048, metavar="MIB", help="guest memory (default 2048)")
    parser.add_argument("--cpus", type=int, default=2, help="virtual CPUs (default 2)")
    parser.add_argument("--data-disk", type=Path, metavar="IMAGE", help="attach a second disk (raw or .qcow2)")
    parser.add_argument(
        "--forward", action="append", default=[], metavar="HOST:GUEST",
        help="forward host 127.0.0.1:HOST to guest port GUEST (repeatable)",
    )
    parser.add_argument(
        "--service", action="append", default=[], metavar="GUEST:HOST",
        help="let the guest reach host 127.0.0.1:HOST at 10.0.2.100:GUEST (repeatable)",
    )
    parser.add_argument(
        "--credential", action="append", default=[], metavar="NAME=VALUE",
        help="pass a systemd credential through SMBIOS (repeatable), e.g. berth.group=canary",
    )
    parser.add_argument(
        "--user-data", type=Path, metavar="FILE",
        help="attach a NoCloud seed (ISO 9660, label cidata) holding FILE as user-data; "
             "files named by its containers' 'archive:' are taken from FILE's directory",
    )
    parser.add_argument(
        "--secure-boot", action="store_true",
        help="boot OVMF's Secure Boot build (SMM); fresh UEFI variables are in setup mode, "
             "where a signed image (berth build --secure-boot-keys) enrols its keys and resets",
    )
    parser.add_argument(
        "--tpm", action="store_true",
        help="give the VM a TPM 2.0 (swtpm, its state beside the VM's): measured boot, and "
             "what an image built with var_encryption tpm2 seals /var to",
    )
    parser.add_argument(
        "--state", type=Path, metavar="DIR",
        help="keep the VM's disk overlay, UEFI variables and SSH key in DIR to boot it again "
             "(default: a throwaway directory)",
    )
    parser.set_defaults(handler=run_vm)


def run_vm(args: argparse.Namespace) -> int:
    from qemu.interactive import run_interactive

    return run_interactive(args)
