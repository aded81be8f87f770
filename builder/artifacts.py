"""Turning mkosi's disk image into berth's artifacts (I/O edge).

Partitions are cut out of disk.raw by type and label, the UKI is read from the
ESP with mtools, and every copy keeps holes so slot padding costs no disk.
"""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

from updater import gpt

_CHUNK = 4 * 1024 * 1024


def read_table(disk: Path) -> list[gpt.Partition]:
    return gpt.read_partitions(str(disk))


def copy_range(source: Path, start: int, size: int, target: Path) -> None:
    """Copy `size` bytes from `source` at `start` into a new sparse file `target`."""
    zero = bytes(_CHUNK)
    with source.open("rb") as src, target.open("wb") as dst:
        src.seek(start)
        left = size
        while left:
            block = src.read(min(_CHUNK, left))
            if not block:
                raise OSError(f"{source} ends before byte {start + size}")
            if block == zero[: len(block)]:
                dst.seek(len(block), 1)
            else:
                dst.write(block)
            left -= len(block)
        dst.truncate(size)


def copy_from_esp(disk: Path, esp: gpt.Partition, path: str, target: Path) -> None:
    subprocess.run(
        ["mcopy", "-n", "-i", f"{disk}@@{esp.offset}", f"::{path}", str(target)],
        check=True,
        capture_output=True,
    )


def list_esp(disk: Path, esp: gpt.Partition, directory: str) -> list[str]:
    out = subprocess.run(
        ["mdir", "-b", "-i", f"{disk}@@{esp.offset}", f"::{directory}"],
        check=True,
        capture_output=True,
        text=True,
    )
    return sorted(
        # mdir -b ends a directory's path with "/".
        line.strip().rstrip("/").rsplit("/", 1)[-1] for line in out.stdout.splitlines() if line.strip()
    )


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def extract_root(root_image: Path, target: Path) -> None:
    """Unpack an erofs image with owners and modes (setuid bits included) for the lint."""
    subprocess.run(
        ["fsck.erofs", f"--extract={target}", "--preserve", str(root_image)],
        check=True,
        capture_output=True,
    )
