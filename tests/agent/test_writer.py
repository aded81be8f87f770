"""The writer on its own: a release artifact streamed into a partition whose old bytes
are all 0xff (the inactive slot holds an older release, never zeros), on a regular
file and on a real block device (a loop device), where zero runs take BLKZEROOUT."""

from __future__ import annotations

import errno
import fcntl
import hashlib
import itertools
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from updater.agent import writer
from updater.agent.updatestate import Progress
from updater.gpt import Partition
from updater.publish.repository import compress_frames
from updater.release import ArtifactRole, ReleaseArtifact

OFFSET = 1 << 20  # where the partition starts on the disk
SLOT = 4 << 20
DISK = OFFSET + SLOT + (1 << 20)
PART = Partition(0, "", "", OFFSET // 512, (OFFSET + SLOT) // 512 - 1, 0, "_empty")
CHUNK = 100_003  # network chunks that straddle frames and zero blocks


def _payload() -> bytes:
    """Data, zeros shorter than a block, zeros over whole blocks, and a zero tail."""
    z = writer.ZERO_BLOCK
    return (os.urandom(1000) + bytes(z // 2) + os.urandom(70_000) + bytes(16 * z + 123)
            + os.urandom(5) + bytes(z + 3))


def _artifact(tmp_path: Path, payload: bytes, compression: str) -> tuple[ReleaseArtifact, bytes]:
    source = tmp_path / "payload"
    source.write_bytes(payload)
    wire_path = tmp_path / "wire"
    if compression == "zstd":
        compress_frames(source, wire_path, 256 << 10)  # several frames, as berth publish makes them
    else:
        shutil.copyfile(source, wire_path)
    wire = wire_path.read_bytes()
    artifact = ReleaseArtifact(ArtifactRole.VERITY, "berth/1.1/root.verity.zst", len(wire),
                               hashlib.sha256(wire).hexdigest(), compression, len(payload),
                               hashlib.sha256(payload).hexdigest())
    return artifact, wire


def _write(disk: str, artifact: ReleaseArtifact, wire: bytes) -> list[Progress]:
    saved: list[Progress] = []

    def stream(offset: int) -> Iterator[bytes]:
        return (wire[at:at + CHUNK] for at in range(offset, len(wire), CHUNK))

    writer.write_artifact(disk, PART, artifact, stream, Progress(), saved.append, lambda _: None)
    return saved


def _old_slot(path: Path) -> None:
    path.write_bytes(b"\xff" * DISK)


def _assert_exact(disk: bytes, payload: bytes) -> None:
    assert disk[OFFSET:OFFSET + len(payload)] == payload
    # Nothing outside the installed bytes changed.
    assert disk[:OFFSET] == b"\xff" * OFFSET
    assert disk[OFFSET + len(payload):] == b"\xff" * (DISK - OFFSET - len(payload))


@pytest.mark.parametrize("compression", ["zstd", "none"])
def test_zero_runs_overwrite_an_old_slot_on_a_regular_file(tmp_path: Path, compression: str) -> None:
    disk = tmp_path / "disk.raw"
    _old_slot(disk)
    payload = _payload()
    artifact, wire = _artifact(tmp_path, payload, compression)
    saved = _write(str(disk), artifact, wire)
    _assert_exact(disk.read_bytes(), payload)
    assert saved[-1] == Progress(len(wire), len(payload), False)
    assert writer.read_back(str(disk), PART, artifact, lambda _: None)


def test_read_back_catches_one_wrong_byte(tmp_path: Path) -> None:
    disk = tmp_path / "disk.raw"
    _old_slot(disk)
    payload = _payload()
    artifact, wire = _artifact(tmp_path, payload, "zstd")
    _write(str(disk), artifact, wire)
    with open(disk, "r+b") as handle:  # a bad write inside a zero run
        handle.seek(OFFSET + len(payload) - 100)
        handle.write(b"\1")
    assert not writer.read_back(str(disk), PART, artifact, lambda _: None)


def test_pieces_cut_only_whole_aligned_zero_blocks() -> None:
    z = writer.ZERO_BLOCK
    data = os.urandom(100) + bytes(3 * z) + os.urandom(5) + bytes(2 * z + 7)
    for offset in (0, 100, z - 100, 512):
        found = list(writer.pieces(data, offset))
        assert found[0][0] == 0 and found[-1][1] == len(data)
        assert all(a[1] == b[0] for a, b in itertools.pairwise(found))
        zero = [(s, e) for s, e, is_zero in found if is_zero]
        assert all((offset + s) % z == 0 and (e - s) % z == 0 and data[s:e] == bytes(e - s) for s, e in zero)
        # Of the 3-block run at 100 at least 2 whole blocks are aligned, of the tail run at least 1.
        assert sum(e - s for s, e in zero) >= 3 * z
    assert list(writer.pieces(bytes(z - 1), 0)) == [(0, z - 1, False)]


@pytest.fixture
def loop_device(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A real block device: a loop device over a file of 0xff bytes (root only)."""
    if os.geteuid() != 0 or shutil.which("losetup") is None or not Path("/dev/loop-control").exists():
        pytest.skip("a loop device needs root, losetup and /dev/loop-control")
    backing = tmp_path / "loop.img"
    _old_slot(backing)
    device = subprocess.run(["losetup", "--find", "--show", str(backing)],
                            check=True, capture_output=True, text=True).stdout.strip()
    try:
        yield device, backing
    finally:
        subprocess.run(["losetup", "--detach", device], check=True)


@pytest.mark.parametrize("refuses", [False, True], ids=["zeroout", "device-refuses"])
def test_zero_runs_on_a_block_device(tmp_path: Path, loop_device: tuple[str, Path],
                                     monkeypatch: pytest.MonkeyPatch, refuses: bool) -> None:
    device, backing = loop_device
    real_ioctl = fcntl.ioctl
    zeroed: list[int] = []

    def ioctl(fd: int, request: int, arg: Any = 0, *rest: Any) -> Any:
        if request != writer.BLKZEROOUT:
            return real_ioctl(fd, request, arg, *rest)
        zeroed.append(int.from_bytes(arg[8:], "little"))
        if refuses:
            raise OSError(errno.EOPNOTSUPP, "no zero-out")
        return real_ioctl(fd, request, arg, *rest)

    monkeypatch.setattr(fcntl, "ioctl", ioctl)
    payload = _payload()
    artifact, wire = _artifact(tmp_path, payload, "zstd")
    _write(device, artifact, wire)
    assert writer.read_back(device, PART, artifact, lambda _: None)
    with open(device, "rb") as handle:
        _assert_exact(handle.read(DISK), payload)
    if refuses:
        assert len(zeroed) == 1  # asked once, then zeros written
    else:
        # Every whole aligned zero block went to the block layer (frames end on block boundaries).
        whole_blocks = sum(e - s for s, e, zero in writer.pieces(payload, OFFSET) if zero)
        assert sum(zeroed) == whole_blocks >= 15 * writer.ZERO_BLOCK
    _assert_exact(backing.read_bytes(), payload)  # and reached the device's backing store


def _windows(wire: bytes) -> list[int]:
    """The window each frame of a multi-frame stream asks its decompressor for."""
    import zstandard

    windows, at = [], 0
    while at < len(wire):
        windows.append(zstandard.get_frame_parameters(wire[at:]).window_size)
        reader = zstandard.ZstdDecompressor().decompressobj()
        reader.decompress(wire[at:])
        at = len(wire) - len(reader.unused_data)
    return windows


@pytest.mark.parametrize("level", [3, 19, 22])
def test_publishing_at_any_level_keeps_each_frames_window_within_what_hosts_allow(
    tmp_path: Path, level: int
) -> None:
    import zstandard

    """Even frames larger than the agent's window and zstd's largest level stay within it."""
    source = tmp_path / "payload"
    payload = b"".join(i.to_bytes(4, "little") * 300 for i in range(12_000)) + os.urandom(1 << 16)
    source.write_bytes(payload)
    wire_path = tmp_path / "wire"
    compress_frames(source, wire_path, 4 << 20 if level < 22 else 16 << 20, level)
    wire = wire_path.read_bytes()
    windows = _windows(wire)
    assert len(windows) == -(-len(payload) // (4 << 20 if level < 22 else 16 << 20))
    assert max(windows) <= 1 << 23
    assert zstandard.ZstdDecompressor(max_window_size=1 << 23).decompressobj(read_across_frames=True) \
        .decompress(wire) == payload


def test_a_frame_asking_for_a_larger_window_is_refused(tmp_path: Path) -> None:
    """A repository cannot make a host spend more memory than one frame's window: a frame
    whose header asks for 32 MiB is refused before its data are decompressed."""
    import zstandard

    payload = os.urandom(1 << 16)
    params = zstandard.ZstdCompressionParameters.from_level(3, window_log=25, write_content_size=0)
    packer = zstandard.ZstdCompressor(compression_params=params).compressobj()
    wire = packer.compress(payload) + packer.flush()
    assert zstandard.get_frame_parameters(wire).window_size == 1 << 25
    artifact = ReleaseArtifact(ArtifactRole.ROOT, "berth/1.1/root.erofs.zst", len(wire),
                               hashlib.sha256(wire).hexdigest(), "zstd", len(payload),
                               hashlib.sha256(payload).hexdigest())
    disk = tmp_path / "disk"
    _old_slot(disk)
    with pytest.raises(writer.WriteError, match="corrupt zstd stream"):
        _write(str(disk), artifact, wire)
