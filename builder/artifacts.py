"""Turning mkosi's disk image into berth's artifacts (I/O edge).

Partitions are cut out of disk.raw by type and label, the UKI is read from the
ESP with mtools, and every copy keeps holes so slot padding costs no disk.
"""

from __future__ import annotations

import errno
import hashlib
import os
import subprocess
from pathlib import Path

from cli.errors import UserError
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


def grow(disk: Path, extra: int) -> None:
    """``extra`` bytes of free space at the end of ``disk``, the backup GPT moved to the new end."""
    with disk.open("r+b") as f:
        f.truncate(disk.stat().st_size + extra)
    done = subprocess.run(["sfdisk", "--quiet", "--relocate", "gpt-bak-std", str(disk)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise UserError(f"moving {disk.name}'s backup GPT to its new end: {done.stderr.strip()}")


def sha256(path: Path) -> str:
    """The file's sha256, reading only its data: a hole is hashed as the zeros it reads
    as without reading it (disk.raw is 3.5 GB of which ~0.45 GB is data; reading it
    whole was most of the 10 s a build spent on its manifest)."""
    digest = hashlib.sha256()
    zero = memoryview(bytes(_CHUNK))
    with path.open("rb") as f:
        for start, end, is_data in _extents(f.fileno()):
            f.seek(start)
            left = end - start
            while left:
                if is_data:
                    block = f.read(min(_CHUNK, left))
                    if not block:
                        raise OSError(f"{path} shrank while it was hashed")
                    digest.update(block)
                    left -= len(block)
                else:
                    step = min(_CHUNK, left)
                    digest.update(zero[:step])
                    left -= step
    return digest.hexdigest()


def _extents(fd: int) -> list[tuple[int, int, bool]]:
    """(start, end, is data) covering the file, from SEEK_DATA/SEEK_HOLE."""
    size = os.fstat(fd).st_size
    extents: list[tuple[int, int, bool]] = []
    position = 0
    while position < size:
        try:
            data = os.lseek(fd, position, os.SEEK_DATA)
        except OSError as error:
            if error.errno != errno.ENXIO:  # no hole support here: all of it is data
                return [(0, size, True)]
            data = size  # a hole up to the end
        if data > position:
            extents.append((position, data, False))
        if data >= size:
            break
        hole = min(os.lseek(fd, data, os.SEEK_HOLE), size)
        extents.append((data, hole, True))
        position = hole
    return extents


def extract_root(root_image: Path, target: Path) -> None:
    """Unpack an erofs image with owners and modes (setuid bits included) for the lint."""
    subprocess.run(
        ["fsck.erofs", f"--extract={target}", "--preserve", str(root_image)],
        check=True,
        capture_output=True,
    )
