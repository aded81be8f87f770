"""A slot artifact's block index: the sha256 of every 4 KiB block of its installed bytes.

`berth publish` signs one per slot artifact as the TUF target ``<artifact>.index``
(beside ``root.erofs.zst``: ``root.erofs.index``) and stores the uncompressed
artifact as a blob a host reads with HTTP range requests. A host that already
runs an older release finds most new blocks in its booted slot (erofs keeps file
data on 4 KiB boundaries, so an unchanged file keeps its blocks when it moves)
and fetches only the rest; every block is checked against this index before it
is written (updater/agent/delta.py).

Wire format, zstd-compressed as one frame: one JSON header line, then the
32-byte digests of the blocks in order (the last block may be short)::

    {"format": "berth-block-index/1", "block_size": 4096, "size": N, "sha256": "…"}\\n<digests>

Pure except ``digest_blocks``, which reads a file descriptor (publisher and agent
hash blocks the same way).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import zstandard

BLOCK = 4096
DIGEST = 32
FORMAT = "berth-block-index/1"
# The index target's custom metadata sits under its own key, so release listings skip it.
DELTA_CUSTOM_KEY = "berth-delta"
INDEX_SUFFIX = ".index"
ZERO_DIGEST = hashlib.sha256(bytes(BLOCK)).digest()
_HEADER_MAX = 1024
# Read size when hashing a slot. A delta update hashes the booted slot while it writes:
# at 8 MiB the read being hashed and the next one were 16 MiB of its peak (bench/agent.py
# --delta, issue 12); at 1 MiB, 2 MiB, and the hashing is no slower.
_READ = 1 << 20


class BadIndex(ValueError):
    """A block index that is not well formed, or disagrees with the signed artifact."""


@dataclass(frozen=True)
class BlockIndex:
    size: int  # installed bytes
    sha256: str  # of all installed bytes
    digests: bytes  # DIGEST bytes per block, in order

    @property
    def blocks(self) -> int:
        return len(self.digests) // DIGEST

    def digest(self, block: int) -> bytes:
        return self.digests[block * DIGEST:(block + 1) * DIGEST]

    def block_length(self, block: int) -> int:
        return min(BLOCK, self.size - block * BLOCK)

    def encode(self) -> bytes:
        header = {"format": FORMAT, "block_size": BLOCK, "size": self.size, "sha256": self.sha256}
        plain = json.dumps(header, sort_keys=True).encode() + b"\n" + self.digests
        return zstandard.ZstdCompressor(level=19).compress(plain)

    @classmethod
    def decode(cls, data: bytes, size: int, sha256: str) -> BlockIndex:
        """The index in ``data``, which must describe ``size`` bytes hashing to ``sha256``
        (the signed artifact's installed size and hash: the decompression is bounded by them)."""
        limit = _HEADER_MAX + block_count(size) * DIGEST
        try:
            # Read at most one byte past the bound, whatever size the frame claims.
            with zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data)) as reader:
                plain = reader.read(limit + 1)
        except zstandard.ZstdError as error:
            raise BadIndex(f"not a zstd frame ({error})") from None
        if len(plain) > limit:
            raise BadIndex(f"decompresses past {limit} bytes")
        line, newline, digests = plain.partition(b"\n")
        try:
            header: Any = json.loads(line) if newline else None
        except ValueError:
            header = None
        if not isinstance(header, dict) or header.get("format") != FORMAT:
            raise BadIndex(f"no {FORMAT} header")
        if header.get("block_size") != BLOCK:
            raise BadIndex(f"block size {header.get('block_size')!r}, expected {BLOCK}")
        if header.get("size") != size or header.get("sha256") != sha256:
            raise BadIndex("describes other bytes than the signed artifact")
        if len(digests) != block_count(size) * DIGEST:
            raise BadIndex(f"{len(digests)} digest bytes for {block_count(size)} blocks")
        return cls(size, sha256, digests)


def block_count(size: int) -> int:
    return -(-size // BLOCK)


def index_path(artifact_path: str) -> str:
    """The index target of an artifact target: ``…/root.erofs.zst`` -> ``…/root.erofs.index``."""
    return blob_path(artifact_path) + INDEX_SUFFIX


def blob_path(artifact_path: str) -> str:
    """Where the artifact's uncompressed bytes live (named, like a target, by their sha256)."""
    return artifact_path.removesuffix(".zst")


def delta_custom(image_id: str, version: str, role: str, blob: str) -> dict[str, Any]:
    return {DELTA_CUSTOM_KEY: {"image_id": image_id, "version": version, "role": role,
                               "blob": blob, "block_size": BLOCK}}


def digest_blocks(fd: int, offset: int, size: int, tick: Callable[[int], None] = lambda _: None) -> BlockIndex:
    """Hash ``size`` bytes of ``fd`` from ``offset``: per block and as a whole."""
    whole = hashlib.sha256()
    digests = bytearray()
    done = 0
    while done < size:
        data = pread_exactly(fd, min(_READ, size - done), offset + done)
        whole.update(data)
        view = memoryview(data)
        for at in range(0, len(data), BLOCK):
            digests += hashlib.sha256(view[at:at + BLOCK]).digest()
        done += len(data)
        tick(done)
    return BlockIndex(size, whole.hexdigest(), bytes(digests))


def pread_exactly(fd: int, length: int, offset: int) -> bytes:
    """``length`` bytes of ``fd`` at ``offset`` (a short read is retried; an end of file is an error)."""
    parts = []
    while length:
        data = os.pread(fd, length, offset)
        if not data:
            raise OSError(f"end of file at {offset}, {length} bytes short")
        parts.append(data)
        offset += len(data)
        length -= len(data)
    return b"".join(parts)
