"""berth-boot-update.service on a Secure Boot host: `bootctl update` may not put an
unsigned systemd-boot where the firmware boots only what db signed. Its conditions,
read from the unit in the image tree, judged by systemd itself (`systemd-analyze
condition`) against trees made here."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parents[2] / "images/host/mkosi.extra/usr/lib/systemd/system/berth-boot-update.service"
DB_CERT = "usr/lib/berth/secure-boot/db.crt"
SIGNED_LOADER = "usr/lib/systemd/boot/efi/systemd-bootx64.efi.signed"


def runs_on(root: Path) -> bool:
    """Whether systemd would start the unit on a host whose root is `root`."""
    conditions = [line for line in UNIT.read_text().splitlines() if line.startswith("ConditionPathExists=")]
    assert conditions, "the unit lost its conditions"
    rooted = [line.replace("=|!/", f"=|!{root}/").replace("=|/", f"=|{root}/") for line in conditions]
    return subprocess.run(["systemd-analyze", "condition", *rooted], check=False,
                          capture_output=True).returncode == 0


@pytest.mark.parametrize(("files", "runs"), [
    ((), True),  # an unsigned image: bootctl updates the loader as before
    ((DB_CERT,), False),  # signed, its root's systemd-boot unsigned: left alone
    ((DB_CERT, SIGNED_LOADER), True),  # signed, and a release ships a signed loader
], ids=["unsigned-image", "signed-image-unsigned-loader", "signed-image-signed-loader"])
def test_a_signed_host_updates_its_boot_loader_only_from_a_signed_one(
    tmp_path: Path, files: tuple[str, ...], runs: bool
) -> None:
    for name in files:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    assert runs_on(tmp_path) is runs
