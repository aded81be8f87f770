"""Sealing mkosi's disk: berth's dm-verity tree in, partition UUIDs and the UKI's root hash set.

mkosi builds the disk with the root-verity slot empty and a UKI whose command
line carries a placeholder root hash of the same length as a real one. This
step hashes the root slot (builder/verity.py), writes the tree into the verity
slot, gives both partitions the UUIDs the Discoverable Partitions
Specification derives from the root hash, and writes the root hash over the
placeholder in every UKI on the ESP — same length, so no byte of the ESP moves
and nothing else changes (ukify leaves the PE checksum 0 and signs nothing:
with Secure Boot keys, builder/sbsign.py signs the sealed UKIs afterwards).
"""

from __future__ import annotations

import mmap
import tempfile
from pathlib import Path

from builder import artifacts, layout, provenance, verity
from builder.settings import BuildSettings
from cli.errors import UserError
from updater import contract, gpt

PLACEHOLDER = "0" * 64
# What mkosi is given to put on the UKI's command line (mkosi adds no roothash= itself
# when repart made no verity).
PLACEHOLDER_ARGUMENT = f"roothash={PLACEHOLDER}"
_CHUNK = 4 * 1024 * 1024


def placeholder_offsets(haystack: bytes | mmap.mmap) -> list[int]:
    """Offsets of the placeholder argument in `haystack` (an ESP's bytes)."""
    needle, found, at = PLACEHOLDER_ARGUMENT.encode(), [], 0
    while (at := haystack.find(needle, at)) != -1:
        found.append(at)
        at += len(needle)
    return found


def seal(settings: BuildSettings, disk: Path) -> str:
    """Seal `disk` in place (see the module's doc); return the root hash."""
    esp, root, hashes = layout.built(artifacts.read_table(disk), settings)
    with disk.open("rb") as f:
        f.seek(root.offset)
        data_bytes = layout.erofs_size(f.read(4096))
    params = verity.params(
        namespace=provenance.NAMESPACE,
        image_id=settings.image_id,
        seed=provenance.seed(settings),
        data_bytes=data_bytes,
    )
    with tempfile.TemporaryDirectory(prefix="berth-verity-", dir=disk.parent) as scratch:
        data, tree = Path(scratch) / "root", Path(scratch) / "tree"
        artifacts.copy_range(disk, root.offset, data_bytes, data)
        roothash = verity.format_tree(data, tree, params)
        if tree.stat().st_size > hashes.size:
            raise UserError(
                f"the verity tree is {tree.stat().st_size} bytes, its slot {hashes.size}: "
                "the repart definitions and builder/verity.py disagree"
            )
        _write_slot(disk, hashes, tree)
    root_uuid, verity_uuid = contract.uuids_from_roothash(roothash)
    gpt.relabel(
        str(disk),
        {root.index: (root_uuid, root.label), hashes.index: (verity_uuid, hashes.label)},
    )
    _fill_roothash(disk, esp, roothash)
    return roothash


def _write_slot(disk: Path, slot: gpt.Partition, content: Path) -> None:
    """`content` at the start of `slot`, zeros after it to the slot's end."""
    with disk.open("r+b") as out, content.open("rb") as src:
        out.seek(slot.offset)
        while block := src.read(_CHUNK):
            out.write(block)
        left = slot.size - src.tell()
        while left:
            n = min(_CHUNK, left)
            out.write(bytes(n))
            left -= n


def _fill_roothash(disk: Path, esp: gpt.Partition, roothash: str) -> None:
    """The root hash over the placeholder in every UKI on the ESP, in place."""
    ukis = [
        n for n in artifacts.list_esp(disk, esp, contract.UKI_DIR) if n.lower().endswith(".efi")
    ]
    with disk.open("r+b") as f, mmap.mmap(
        f.fileno(), esp.size, offset=esp.offset, access=mmap.ACCESS_WRITE
    ) as area:
        found = placeholder_offsets(area)
        # A placeholder cut by a cluster boundary would be missed: one whole one per UKI.
        if len(found) != len(ukis):
            raise UserError(
                f"found the UKI's root hash placeholder {len(found)} times on the ESP, "
                f"expected once in each of {ukis}"
            )
        for at in found:
            area[at : at + len(PLACEHOLDER_ARGUMENT)] = f"roothash={roothash}".encode()
        area.flush()
