"""Stream a release artifact into a partition, resumably, and read it back.

The slot images arrive as concatenated zstd frames (berth publish compresses
them that way): after each whole frame the partition is fsynced and the
(wire offset, installed offset) pair saved, so a restart asks the server for
the rest from that frame on with an HTTP range request. Nothing is staged
anywhere but in the partition itself.

Most of a slot is zero padding. Whole aligned blocks of zeros go to the block
layer's zero-out (BLKZEROOUT), which thin storage and QEMU's qcow2 do without
writing data; on a regular file, or a device that cannot, they are written as
zeros. Either way the slot ends up holding exactly the installed bytes: the
inactive slot still holds an older release, so nothing is skipped.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import struct
from collections.abc import Callable, Iterator

from updater.agent.updatestate import Progress
from updater.failpoint import durable
from updater.gpt import Partition
from updater.release import MAX_WINDOW_LOG, ReleaseArtifact

# How often an uncompressed artifact records its progress.
_PLAIN_CHECKPOINT = 8 << 20
_READ = 8 << 20
# Zero runs are cut into blocks of this size, aligned on the disk.
ZERO_BLOCK = 64 << 10
_ZEROS = bytes(ZERO_BLOCK)
_ZERO_WRITE = bytes(1 << 20)
BLKZEROOUT = 0x127F  # _IO(0x12, 127) in <linux/fs.h>
# What a device (or a file) answers when it has no zero-out: write the zeros instead.
# EBUSY too: on a whole disk whose other partitions are mounted (/var, the ESP) the
# kernel may only invalidate the range's cached pages, and a dirty one refuses.
_NO_ZEROOUT = (errno.ENOTTY, errno.EOPNOTSUPP, errno.EINVAL, errno.EBUSY)


class WriteError(RuntimeError):
    """The artifact does not match what the signed metadata promises."""


class StreamEnded(RuntimeError):
    """The server stopped before the end: resume later from the last checkpoint."""


def pieces(data: bytes, offset: int) -> Iterator[tuple[int, int, bool]]:
    """Cut ``data``, bound for disk ``offset``, into (start, end, zero) pieces covering it
    in order: the zero pieces are whole ZERO_BLOCK-aligned blocks of zeros, the rest data."""
    start, zero = 0, False
    at = -offset % ZERO_BLOCK
    while at + ZERO_BLOCK <= len(data):
        block_zero = data.startswith(_ZEROS, at)
        if block_zero != zero:
            if at > start:
                yield start, at, zero
            start, zero = at, block_zero
        at += ZERO_BLOCK
    if zero:
        yield start, at, True
        start = at
    if start < len(data):
        yield start, len(data), False


def _pwrite_all(fd: int, data: bytes | memoryview, offset: int) -> None:
    view = memoryview(data)
    while view:
        done = os.pwrite(fd, view, offset)
        offset += done
        view = view[done:]


class Sink:
    def __init__(self, fd: int, part: Partition, artifact: ReleaseArtifact, installed: int) -> None:
        self.fd, self.part, self.artifact, self.installed = fd, part, artifact, installed
        self.zeroout = stat.S_ISBLK(os.fstat(fd).st_mode)

    def write(self, data: bytes) -> None:
        if self.installed + len(data) > self.artifact.installed_size:
            raise WriteError(
                f"{self.artifact.target_path}: decompresses past its signed "
                f"{self.artifact.installed_size} bytes"
            )
        offset = self.part.offset + self.installed
        view = memoryview(data)
        for start, end, zero in pieces(data, offset):
            if zero:
                self._zero(offset + start, end - start)
            else:
                _pwrite_all(self.fd, view[start:end], offset + start)
        self.installed += len(data)

    def _zero(self, offset: int, length: int) -> None:
        if self.zeroout:
            try:
                fcntl.ioctl(self.fd, BLKZEROOUT, struct.pack("=QQ", offset, length))
                return
            except OSError as error:
                if error.errno not in _NO_ZEROOUT:
                    raise
                self.zeroout = False
        end = offset + length
        while offset < end:
            size = min(len(_ZERO_WRITE), end - offset)
            _pwrite_all(self.fd, memoryview(_ZERO_WRITE)[:size], offset)
            offset += size


def write_artifact(
    disk: str,
    part: Partition,
    artifact: ReleaseArtifact,
    open_stream: Callable[[int], Iterator[bytes]],
    progress: Progress,
    save: Callable[[Progress], None],
    tick: Callable[[int], None],
) -> None:
    """Write ``artifact`` into ``part`` of ``disk`` from ``progress`` on, saving progress as it goes.

    ``tick(installed_bytes)`` is called per chunk (progress display, watchdog).
    """
    if artifact.installed_size > part.size:
        raise WriteError(
            f"{artifact.target_path}: {artifact.installed_size} bytes do not fit the "
            f"{part.size}-byte partition {part.label!r}"
        )
    if artifact.compression not in ("zstd", "none"):
        raise WriteError(f"{artifact.target_path}: unknown compression {artifact.compression!r}")
    # Only a step writing a slot decompresses and hashes: the idle service (which imports
    # this module for its errors) holds neither zstandard nor OpenSSL (service.run).
    import hashlib

    import zstandard

    fd = os.open(disk, os.O_RDWR)
    try:
        sink = Sink(fd, part, artifact, progress.installed_offset)
        resumed = progress.resumed or progress.wire_offset > 0
        wire_hash = None if resumed else hashlib.sha256()
        start = progress.wire_offset
        seen = start  # wire bytes received so far

        saved_at = start

        def checkpoint(wire_offset: int) -> None:
            nonlocal saved_at
            os.fsync(fd)
            save(Progress(wire_offset, sink.installed, resumed))
            saved_at = wire_offset
            durable(f"checkpoint {artifact.role.value} {wire_offset}")

        frame = zstandard.ZstdDecompressor(max_window_size=1 << MAX_WINDOW_LOG).decompressobj()
        for chunk in open_stream(start):
            chunk_start = seen
            seen += len(chunk)
            if seen > artifact.length:
                raise WriteError(f"{artifact.target_path}: longer than the signed {artifact.length} bytes")
            if wire_hash is not None:
                wire_hash.update(chunk)
            if artifact.compression == "none":
                sink.write(chunk)
                if seen - saved_at >= _PLAIN_CHECKPOINT:
                    checkpoint(seen)
            else:
                # A frame boundary is the only point a restart can resume from.
                data, used = chunk, 0
                while data:
                    try:
                        sink.write(frame.decompress(data))
                    except zstandard.ZstdError as error:
                        raise WriteError(f"{artifact.target_path}: corrupt zstd stream ({error})") from None
                    if not frame.eof:
                        break
                    used += len(data) - len(frame.unused_data)
                    data = frame.unused_data
                    checkpoint(chunk_start + used)
                    frame = zstandard.ZstdDecompressor(max_window_size=1 << MAX_WINDOW_LOG).decompressobj()
            tick(sink.installed)
        if seen != artifact.length:
            raise StreamEnded(
                f"{artifact.target_path}: stream ended at {seen} of {artifact.length} signed bytes"
            )
        if wire_hash is not None and wire_hash.hexdigest() != artifact.sha256:
            raise WriteError(f"{artifact.target_path}: sha256 differs from the signed target")
        if sink.installed != artifact.installed_size:
            raise WriteError(
                f"{artifact.target_path}: wrote {sink.installed} of {artifact.installed_size} bytes"
            )
        if saved_at != seen:
            checkpoint(seen)
    finally:
        os.close(fd)


def read_back(disk: str, part: Partition, artifact: ReleaseArtifact, tick: Callable[[int], None]) -> bool:
    """Whether the partition now holds exactly the signed installed bytes (read from the disk,
    not the page cache: the writer fsynced them, so dropping the clean pages first makes
    every read reach the device)."""
    import hashlib  # here, not at the top: the idle service holds no OpenSSL (service.run)

    digest = hashlib.sha256()
    buffer = memoryview(bytearray(_READ))
    fd = os.open(disk, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, part.offset, artifact.installed_size, os.POSIX_FADV_DONTNEED)
        os.posix_fadvise(fd, part.offset, artifact.installed_size, os.POSIX_FADV_SEQUENTIAL)
        done = 0
        while done < artifact.installed_size:
            want = min(_READ, artifact.installed_size - done)
            got = os.preadv(fd, [buffer[:want]], part.offset + done)
            if not got:
                return False
            digest.update(buffer[:got])
            # Checked bytes need no cache: a slot's worth would push the host's own pages out.
            os.posix_fadvise(fd, part.offset + done, got, os.POSIX_FADV_DONTNEED)
            done += got
            tick(done)
    finally:
        os.close(fd)
    return digest.hexdigest() == artifact.installed_sha256
