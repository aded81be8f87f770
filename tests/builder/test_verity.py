"""berth's dm-verity tree: its parameters, its size, and veritysetup's own verdict on it."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import pytest

from builder import verity
from builder.layout import MIB

SEED = uuid.UUID("6a1f0e0c-4d1c-5a5e-9d0e-3f3c2b8f7a10")


def _params(image_id: str = "berth", seed: uuid.UUID = SEED, data_bytes: int = MIB) -> verity.Params:
    return verity.params(namespace=uuid.NAMESPACE_URL, image_id=image_id, seed=seed, data_bytes=data_bytes)


def test_parameters_are_derived_not_drawn() -> None:
    assert _params() == _params()
    assert _params().data_blocks == MIB // 4096
    # The salt is the image's, the same in every version; the superblock UUID is the build's.
    other_version = _params(seed=uuid.uuid5(SEED, "another version"))
    assert other_version.salt == _params().salt and other_version.uuid != _params().uuid
    assert _params(image_id="other").salt != _params().salt
    assert len(bytes.fromhex(_params().salt)) == 32
    with pytest.raises(ValueError, match="multiple of 4096"):
        _params(data_bytes=MIB + 512)


@pytest.mark.parametrize("data_bytes", [4096, 3 * MIB + 4096, 128 * MIB])
def test_tree_is_reproducible_sized_as_computed_and_verifies(tmp_path: Path, data_bytes: int) -> None:
    data, tree, again = tmp_path / "data", tmp_path / "tree", tmp_path / "again"
    with data.open("wb") as f:
        f.write(bytes(range(256)) * 64)
        f.truncate(data_bytes + 8 * 4096)  # a slot is larger than what it hashes
    p = _params(data_bytes=data_bytes)
    roothash = verity.format_tree(data, tree, p)
    assert verity.format_tree(data, again, p) == roothash
    assert tree.read_bytes() == again.read_bytes()
    assert tree.stat().st_size == verity.tree_size(data_bytes)
    dump = subprocess.run(["veritysetup", "dump", str(tree)], check=True, capture_output=True, text=True).stdout
    for line in (
        "Data block size: \t4096",
        "Hash block size: \t4096",
        f"Data blocks:     \t{data_bytes // 4096}",
        f"Salt:            \t{p.salt}",
        f"UUID:            \t{p.uuid}",
    ):
        assert line in dump
    subprocess.run(["veritysetup", "verify", str(data), str(tree), roothash], check=True, capture_output=True)
    with data.open("r+b") as f:
        f.write(b"tampered")
    bad = subprocess.run(["veritysetup", "verify", str(data), str(tree), roothash], check=False, capture_output=True)
    assert bad.returncode != 0


def test_roothash_is_read_from_veritysetups_report() -> None:
    report = "VERITY header information for t\nSalt:    \tab\nRoot hash:      \t" + "a1" * 32 + "\n"
    assert verity.parse_roothash(report) == "a1" * 32
    with pytest.raises(ValueError, match="no root hash"):
        verity.parse_roothash("Root hash: nothing")
