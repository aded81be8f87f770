"""The manifest's sha256 reads only a file's data and hashes its holes as zeros: it must
be the sha256 of the bytes the file reads as, whatever its holes."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from builder.artifacts import _CHUNK, sha256

MIB = 1 << 20


@pytest.mark.parametrize(
    "size, writes",
    [
        (0, []),
        (3 * _CHUNK + 5, []),  # all hole
        (5 * MIB + 7, [(0, b"head")]),  # data, then a hole to the end
        (9 * MIB + 1, [(9 * MIB - 3, b"tail")]),  # a hole, then data at the end
        (20 * MIB, [(MIB, os.urandom(3 * _CHUNK + 11)), (17 * MIB + 4095, b"x" * 8193)]),
        (2 * _CHUNK, [(0, os.urandom(2 * _CHUNK))]),  # no hole at all
    ],
    ids=["empty", "hole-only", "trailing-hole", "leading-hole", "scattered", "dense"],
)
def test_sha256_is_that_of_the_bytes_holes_included(tmp_path: Path, size: int, writes: list[tuple[int, bytes]]) -> None:
    path = tmp_path / "disk"
    with path.open("wb") as f:
        f.truncate(size)
        for offset, data in writes:
            f.seek(offset)
            f.write(data)
    assert sha256(path) == hashlib.sha256(path.read_bytes()).hexdigest()
