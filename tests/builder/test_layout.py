"""The disk layout's pure parts, checked against the real tools where one exists."""

from __future__ import annotations

import configparser
import subprocess
from pathlib import Path

import pytest

from builder import layout, settings
from builder.layout import MIB
from cli.errors import UserError
from updater import contract
from updater.gpt import Partition

ROOT_TYPES = contract.ROOT_TYPES[contract.BUILD_ARCHITECTURE]

DEFAULTS = settings.parse({}, "test")


def _parsed(text: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(text)
    return parser


def test_repart_definitions_lay_out_both_slots_alike() -> None:
    defs = {
        name: _parsed(text)["Partition"]
        for name, text in layout.repart_definitions(DEFAULTS).items()
    }
    slots = layout.slots(DEFAULTS)
    a, av, b, bv = (
        defs["10-root-a.conf"],
        defs["11-root-verity-a.conf"],
        defs["20-root-b.conf"],
        defs["21-root-verity-b.conf"],
    )
    assert (a["Type"], a["Label"], a["Format"]) == ("root", "berth_1.0.0", "erofs")
    assert (av["Type"], av["Label"]) == ("root-verity", "berth_1.0.0_verity")
    # repart makes no verity (builder/seal.py does), so it reports no root hash to mkosi.
    assert "Verity" not in a and "Verity" not in av and "Format" not in av
    assert (b["Type"], b["Label"], b["SplitName"]) == ("root", "_empty", "-")
    assert (bv["Type"], bv["Label"], bv["SplitName"]) == ("root-verity", "_empty", "-")
    for data in (a, b):
        assert int(data["SizeMinBytes"]) == int(data["SizeMaxBytes"]) == slots.slot_size
    for hashes in (av, bv):
        assert int(hashes["SizeMinBytes"]) == int(hashes["SizeMaxBytes"]) == slots.verity_slot_size
    assert (defs["00-esp.conf"]["Label"], defs["30-var.conf"]["Label"]) == ("esp", "var")
    assert defs["30-var.conf"]["Format"] == "ext4"


@pytest.mark.parametrize("data_mib", [1, 64, 300])
def test_verity_slot_holds_what_veritysetup_writes(tmp_path: Path, data_mib: int) -> None:
    data, hashes = tmp_path / "data", tmp_path / "hashes"
    data.write_bytes(b"")
    with data.open("r+b") as f:
        f.truncate(data_mib * MIB)
    subprocess.run(
        [
            "veritysetup",
            "format",
            "--data-block-size=4096",
            "--hash-block-size=4096",
            str(data),
            str(hashes),
        ],
        check=True,
        capture_output=True,
    )
    need = layout.verity_size(data_mib * MIB)
    assert hashes.stat().st_size <= need < hashes.stat().st_size + 2 * MIB


def test_erofs_size_reads_the_superblock_of_a_real_image(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "usr/bin").mkdir(parents=True)
    (tree / "usr/bin/blob").write_bytes(bytes(range(256)) * 4096)
    image = tmp_path / "root.erofs"
    subprocess.run(["mkfs.erofs", str(image), str(tree)], check=True, capture_output=True)
    size = image.stat().st_size
    with image.open("r+b") as f:
        f.truncate(size + 64 * MIB)  # a slot is larger than its file system
        header = f.read(4096)
    assert layout.erofs_size(header) == size
    with pytest.raises(ValueError, match="not an erofs image"):
        layout.erofs_size(bytes(4096))


def test_slot_fit_honours_the_margin() -> None:
    tight = settings.parse({"slot_size_mib": 1000, "slot_margin_percent": 20}, "test")
    layout.check_slot_fit(800 * MIB, tight)
    with pytest.raises(
        UserError, match="800 MiB.*1000 MiB slot with 20% margin allows 800 MiB"
    ) as error:
        layout.check_slot_fit(800 * MIB + 1, tight)
    assert "slot_size_mib" in str(error.value)


def test_partition_uuids_derive_from_the_root_hash() -> None:
    roothash = "483d726610fae1d43c6f2451dfb5206c13b6b616f4c4e158a041be0f08608416"
    assert contract.uuids_from_roothash(roothash) == (
        "483d7266-10fa-e1d4-3c6f-2451dfb5206c",
        "13b6b616-f4c4-e158-a041-be0f08608416",
    )


def test_partitions_are_found_by_type_and_label_never_by_number() -> None:
    # As updater.gpt reads them (tests/agent/test_gpt.py checks it against sfdisk).
    parts = [
        Partition(0, ROOT_TYPES.root, "a", 2048, 2147, 0, "_empty"),
        Partition(1, ROOT_TYPES.root, "b", 4096, 4195, 0, "berth_2"),
    ]
    found = layout.find(parts, ROOT_TYPES.root, "berth_2")
    assert (found.index, found.offset, found.part_uuid) == (1, 4096 * 512, "b")
    with pytest.raises(ValueError, match="found 0"):
        layout.find(parts, ROOT_TYPES.verity, "berth_2")


def test_mirror_comes_from_the_machines_apt_sources() -> None:
    deb822 = (
        "Types: deb\n# a comment\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\n"
        "Components: main\n\nTypes: deb deb-src\nURIs: http://ftp.example.org/debian/\n"
        "Suites: bookworm bookworm-updates\nComponents: main\n"
    )
    assert layout.parse_mirror({"debian.sources": deb822}) == "http://ftp.example.org/debian"
    one_line = "deb https://packages.cloud.example/apt cloud main\ndeb [arch=amd64] http://m.example/debian bookworm main\n"
    assert layout.parse_mirror({"sources.list": one_line}) == "http://m.example/debian"
    assert (
        layout.parse_mirror({"x.list": "deb https://deb.nodesource.com/node_20.x nodistro main\n"})
        is None
    )
