"""UKI entries on the mounted ESP: list them, install one atomically, remove one."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from updater.agent.entries import parse_entries
from updater.atomic import fsync_dir, fsync_file
from updater.contract import UKI_DIR, BootEntry
from updater.failpoint import durable


class EspError(RuntimeError):
    pass


class Esp:
    def __init__(self, mount_point: Path) -> None:
        self.linux = mount_point / UKI_DIR

    def entries(self) -> list[BootEntry]:
        return parse_entries(sorted(p.name for p in self.linux.iterdir() if p.is_file()))

    def install(
        self, filename: str, chunks: Iterable[bytes], length: int, sha256: str
    ) -> None:
        """Write a UKI under a name systemd-boot ignores, check it, fsync, then rename it live."""
        import hashlib  # here, not at the top: the idle service holds no OpenSSL (service.run)

        temp = self.linux / f".{filename}.partial"
        digest = hashlib.sha256()
        written = 0
        try:
            with open(temp, "wb") as handle:
                for chunk in chunks:
                    written += len(chunk)
                    if written > length:
                        raise EspError(f"{filename}: longer than the signed {length} bytes")
                    digest.update(chunk)
                    handle.write(chunk)
                handle.flush()
                os.fsync(handle.fileno())
            if written != length or digest.hexdigest() != sha256:
                raise EspError(f"{filename}: {written} bytes with sha256 {digest.hexdigest()[:16]}… "
                               f"do not match the signed target")
            os.replace(temp, self.linux / filename)
            # vfat keeps a file's size and first cluster in its directory entry, which a
            # rename writes empty and the file's own fsync fills in: without this a power
            # cut leaves a 0-byte entry (seen in QEMU), whatever the directory's fsync did.
            fsync_file(self.linux / filename)
        finally:
            temp.unlink(missing_ok=True)
        fsync_dir(self.linux)
        durable(f"esp install {filename}")

    def holds(self, filename: str, length: int, sha256: str) -> bool:
        """Whether the entry ``filename`` is exactly the signed UKI (read from the ESP)."""
        import hashlib  # here, not at the top: the idle service holds no OpenSSL (service.run)

        path = self.linux / filename
        try:
            if path.stat().st_size != length:
                return False
            with open(path, "rb") as handle:
                return hashlib.file_digest(handle, "sha256").hexdigest() == sha256
        except FileNotFoundError:
            return False

    def remove(self, entry: BootEntry) -> None:
        (self.linux / entry.filename).unlink(missing_ok=True)
        fsync_dir(self.linux)
        durable(f"esp remove {entry.filename}")
