"""The GPT edge builder and agent share (updater/gpt.py) against sfdisk: same partitions
read, relabels sfdisk accepts, and a torn primary table (power cut mid-relabel) read
from the backup and repaired."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from updater.agent.slots import find_slots
from updater.gpt import read_partitions, relabel


def _sfdisk(disk: Path) -> list[dict]:
    out = subprocess.run(["sfdisk", "--json", str(disk)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)["partitiontable"]["partitions"]


def test_reads_what_sfdisk_reads_and_relabels_in_both_tables(base_disk: Path, tmp_path: Path) -> None:
    disk = tmp_path / "disk.raw"
    shutil.copyfile(base_disk, disk)
    ours = read_partitions(str(disk))
    theirs = _sfdisk(disk)
    assert [(p.first_lba, p.part_uuid, p.label) for p in ours] == \
        [(p["start"], p["uuid"].lower(), p.get("name", "")) for p in theirs]
    slot_b = find_slots(ours, "x86_64")["b"]
    relabel(str(disk), {slot_b.root.index: ("11111111-2222-3333-4444-555555555555", "berth_2.0")})
    after = _sfdisk(disk)
    assert after[3]["uuid"].lower() == "11111111-2222-3333-4444-555555555555" and after[3]["name"] == "berth_2.0"
    assert after[:3] == theirs[:3] and after[4:] == theirs[4:]
    verify = subprocess.run(["sfdisk", "--verify", str(disk)], capture_output=True, text=True, check=False)
    assert verify.returncode == 0 and "backup" not in verify.stdout.lower() + verify.stderr.lower()


def test_torn_primary_table_falls_back_to_backup(base_disk: Path, tmp_path: Path) -> None:
    disk = tmp_path / "disk.raw"
    shutil.copyfile(base_disk, disk)
    expected = read_partitions(str(disk))
    with open(disk, "r+b") as handle:  # a power cut half-way through the primary entries
        handle.seek(2 * 512)
        handle.write(b"\xff" * 512)
    assert read_partitions(str(disk)) == expected
    slot_b = find_slots(expected, "x86_64")["b"]
    relabel(str(disk), {slot_b.verity.index: ("11111111-2222-3333-4444-555555555555", "berth_2.0_verity")})
    assert _sfdisk(disk)[4]["name"] == "berth_2.0_verity"
    assert subprocess.run(["sfdisk", "--verify", str(disk)], capture_output=True, check=False).returncode == 0
