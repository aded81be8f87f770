"""The root slot's dm-verity hash tree, made by berth instead of systemd-repart.

systemd-repart 254 (bookworm-backports) draws the verity salt and the verity
superblock's UUID at random whatever --seed says, and hashes 512-byte blocks.
berth runs `veritysetup format` itself with both values derived from the
image, and with 4 KiB data and hash blocks: the erofs block size and the page
size, so the tree is an eighth of the size and every read verifies fewer levels.
The block sizes are in the superblock, which systemd-veritysetup reads at boot.
"""

from __future__ import annotations

import hashlib
import math
import re
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

from cli.errors import UserError

BLOCK = 4096  # data and hash block size
HASH = "sha256"
_DIGEST = 32  # bytes of a sha256
_SUPERBLOCK = 4096  # veritysetup's superblock, at the start of the hash device


@dataclass(frozen=True)
class Params:
    """What decides a hash tree's bytes besides the data."""

    data_blocks: int
    salt: str  # hex
    uuid: uuid.UUID  # the superblock's


def params(*, namespace: uuid.UUID, image_id: str, seed: uuid.UUID, data_bytes: int) -> Params:
    """The tree's parameters for a root file system of `data_bytes`.

    The salt depends on the image's name only, not its version: a data block that
    does not change between two versions keeps its hash block, so a delta update
    carries only the hashes of what changed. The superblock UUID is per build
    variant (the build's seed), like every other UUID on the disk.
    """
    if data_bytes <= 0 or data_bytes % BLOCK:
        raise ValueError(f"verity data must be a positive multiple of {BLOCK} bytes")
    salt = hashlib.sha256(f"{namespace}/verity-salt/{image_id}".encode()).hexdigest()
    return Params(data_bytes // BLOCK, salt, uuid.uuid5(seed, "verity-superblock"))


def tree_size(data_bytes: int) -> int:
    """Bytes `veritysetup format` writes for `data_bytes` of data: superblock and every
    level of the tree, each level a whole number of hash blocks."""
    blocks = math.ceil(data_bytes / BLOCK)
    per_block = BLOCK // _DIGEST
    total = 0
    while blocks > 1:  # one data block is its own root: no tree
        blocks = math.ceil(blocks / per_block)
        total += blocks
    return _SUPERBLOCK + total * BLOCK


def format_command(data: Path, tree: Path, p: Params) -> list[str]:
    return [
        "veritysetup",
        "format",
        f"--hash={HASH}",
        f"--data-block-size={BLOCK}",
        f"--hash-block-size={BLOCK}",
        f"--data-blocks={p.data_blocks}",
        f"--salt={p.salt}",
        f"--uuid={p.uuid}",
        str(data),
        str(tree),
    ]


def parse_roothash(output: str) -> str:
    """The root hash from `veritysetup format`'s report."""
    match = re.search(r"^Root hash:\s*([0-9a-f]{64})\s*$", output, re.MULTILINE)
    if not match:
        raise ValueError(f"no root hash in veritysetup's output: {output!r}")
    return match.group(1)


# I/O edge.


def format_tree(data: Path, tree: Path, p: Params) -> str:
    """Write the hash tree of `data`'s first blocks to a new file `tree`; return the root hash."""
    tree.unlink(missing_ok=True)
    try:
        out = subprocess.run(
            format_command(data, tree, p), check=True, capture_output=True, text=True
        )
    except FileNotFoundError as error:
        raise UserError("veritysetup not found: run `make setup` (cryptsetup-bin)") from error
    except subprocess.CalledProcessError as error:
        raise UserError(f"veritysetup format failed: {error.stderr.strip()[:300]}") from error
    return parse_roothash(out.stdout)
