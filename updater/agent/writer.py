"""Stream a release artifact into a partition, resumably, and read it back.

The root image arrives as concatenated zstd frames (berth publish compresses
it that way): after each whole frame the partition is fsynced and the
(wire offset, installed offset) pair saved, so a restart asks the server for
the rest from that frame on with an HTTP range request. Nothing is staged
anywhere but in the partition itself.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator

import zstandard

from updater.agent.failpoint import durable
from updater.agent.gpt import Partition
from updater.agent.machine import Progress
from updater.release import ReleaseArtifact

# How often an uncompressed artifact records its progress.
_PLAIN_CHECKPOINT = 8 << 20
_READ = 4 << 20


class WriteError(RuntimeError):
    """The artifact does not match what the signed metadata promises."""


class StreamEnded(RuntimeError):
    """The server stopped before the end: resume later from the last checkpoint."""


class _Sink:
    def __init__(self, fd: int, part: Partition, artifact: ReleaseArtifact, installed: int) -> None:
        self.fd, self.part, self.artifact, self.installed = fd, part, artifact, installed

    def write(self, data: bytes) -> None:
        if self.installed + len(data) > self.artifact.installed_size:
            raise WriteError(
                f"{self.artifact.target_path}: decompresses past its signed "
                f"{self.artifact.installed_size} bytes"
            )
        view = memoryview(data)
        while view:
            done = os.pwrite(self.fd, view, self.part.offset + self.installed)
            self.installed += done
            view = view[done:]


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
    fd = os.open(disk, os.O_RDWR)
    try:
        sink = _Sink(fd, part, artifact, progress.installed_offset)
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

        frame = zstandard.ZstdDecompressor().decompressobj()
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
                    frame = zstandard.ZstdDecompressor().decompressobj()
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
    not the page cache)."""
    digest = hashlib.sha256()
    fd = os.open(disk, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, part.offset, artifact.installed_size, os.POSIX_FADV_DONTNEED)
        done = 0
        while done < artifact.installed_size:
            want = min(_READ, artifact.installed_size - done)
            data = os.pread(fd, want, part.offset + done)
            if not data:
                return False
            digest.update(data)
            done += len(data)
            tick(done)
    finally:
        os.close(fd)
    return digest.hexdigest() == artifact.installed_sha256
