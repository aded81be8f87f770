"""Sealing a real (small) disk as mkosi leaves it: GPT by sfdisk, ESP by mkfs.vfat and
mtools, root by mkfs.erofs, the verity slot empty."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from builder import seal, settings, verity
from builder.layout import MIB
from cli.errors import UserError
from updater import contract, gpt

ROOT_TYPES = contract.ROOT_TYPES[contract.BUILD_ARCHITECTURE]
SETTINGS = settings.parse({}, "test")
UKI_PATH = f"::{contract.UKI_DIR}/berth_1.0.0.efi"


def _disk(tmp_path: Path, placeholders: int = 1) -> Path:
    disk = tmp_path / "disk.raw"
    with disk.open("wb") as f:
        f.truncate(20 * MIB)
    table = "\n".join(
        [
            "label: gpt",
            f"start=2048, size={8 * 2048}, type={contract.TYPE_ESP}, name={contract.ESP_LABEL}",
            f"size={8 * 2048}, type={ROOT_TYPES.root}, name=berth_1.0.0",
            f"size=2048, type={ROOT_TYPES.verity}, name=berth_1.0.0_verity",
        ]
    )
    subprocess.run(["sfdisk", "-q", str(disk)], input=table, text=True, check=True, capture_output=True)
    esp, root, _ = gpt.read_partitions(str(disk))
    uki = tmp_path / "uki.efi"
    uki.write_bytes(
        b"MZ" + os.urandom(70000) + placeholders * f".cmdline\0ro {seal.PLACEHOLDER_ARGUMENT}\0".encode()
    )
    image = tmp_path / "esp.img"
    subprocess.run(["mkfs.vfat", "-C", str(image), str(8 * 1024)], check=True, capture_output=True)
    subprocess.run(["mmd", "-i", str(image), "::EFI", f"::{contract.UKI_DIR}"], check=True)
    subprocess.run(["mcopy", "-i", str(image), str(uki), UKI_PATH], check=True)
    tree = tmp_path / "tree"
    (tree / "usr/lib").mkdir(parents=True)
    (tree / "usr/lib/os-release").write_text("IMAGE_ID=berth\nIMAGE_VERSION=1.0.0\n")
    (tree / "usr/lib/blob").write_bytes(os.urandom(MIB))
    erofs = tmp_path / "root.img"
    subprocess.run(["mkfs.erofs", "--quiet", "-T0", str(erofs), str(tree)], check=True)
    with disk.open("r+b") as f:
        for part, content in ((esp, image), (root, erofs)):
            f.seek(part.offset)
            f.write(content.read_bytes())
    return disk


def test_seal_writes_a_verity_tree_the_uuids_and_the_roothash(tmp_path: Path) -> None:
    disk = _disk(tmp_path)
    copy = tmp_path / "copy.raw"
    copy.write_bytes(disk.read_bytes())
    roothash = seal.seal(SETTINGS, disk)
    esp, root, hashes = gpt.read_partitions(str(disk))
    assert (root.part_uuid, hashes.part_uuid) == contract.uuids_from_roothash(roothash)
    assert (root.label, hashes.label) == ("berth_1.0.0", "berth_1.0.0_verity")
    data, tree = tmp_path / "data", tmp_path / "tree.img"
    raw = disk.read_bytes()
    data.write_bytes(raw[root.offset : root.offset + root.size])
    tree.write_bytes(raw[hashes.offset : hashes.offset + hashes.size])
    subprocess.run(["veritysetup", "verify", str(data), str(tree), roothash], check=True, capture_output=True)
    dump = subprocess.run(["veritysetup", "dump", str(tree)], check=True, capture_output=True, text=True).stdout
    assert f"Data block size: \t{verity.BLOCK}" in dump and f"Hash block size: \t{verity.BLOCK}" in dump
    out = tmp_path / "sealed.efi"
    subprocess.run(["mcopy", "-n", "-i", f"{disk}@@{esp.offset}", UKI_PATH, str(out)], check=True)
    assert f"ro roothash={roothash}\0".encode() in out.read_bytes()
    assert seal.PLACEHOLDER_ARGUMENT.encode() not in out.read_bytes()
    # A second copy of the same unsealed disk seals to the same bytes.
    assert seal.seal(SETTINGS, copy) == roothash
    assert copy.read_bytes() == disk.read_bytes()


def test_a_missing_placeholder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="placeholder 0 times on the ESP"):
        seal.seal(SETTINGS, _disk(tmp_path, placeholders=0))
