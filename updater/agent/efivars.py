"""UEFI variables through efivarfs (I/O edge): read one, and make an authenticated write.

A file ``NAME-GUID`` under /sys/firmware/efi/efivars reads as the variable's
4 attribute bytes and its data; writing attributes + data calls SetVariable.
For an authenticated variable (db) the data is a whole .auth file
(EFI_VARIABLE_AUTHENTICATION_2 then the signature lists) and the firmware
checks its signature against KEK. The kernel creates the files of variables
not on its short list of harmless ones immutable (FS_IMMUTABLE_FL, as
`chattr +i`), so the flag is cleared first and set back after. One write() is
one SetVariable, which the firmware commits whole or not at all.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import struct
from collections.abc import Iterator
from pathlib import Path

EFIVARS = Path("/sys/firmware/efi/efivars")
# <linux/fs.h>: _IOR('f', 1, long) and _IOW('f', 2, long); the kernel reads an int.
_FS_IOC_GETFLAGS, _FS_IOC_SETFLAGS, _FS_IMMUTABLE_FL = 0x80086601, 0x40086602, 0x10


def path(efivars: Path, name: str, guid: str) -> Path:
    return efivars / f"{name}-{guid}"


def read(efivars: Path, name: str, guid: str) -> bytes | None:
    """The variable's whole efivarfs file (attributes, then data), or None if the firmware has none."""
    try:
        return path(efivars, name, guid).read_bytes()
    except FileNotFoundError:
        return None


def write(efivars: Path, name: str, guid: str, attributes: int, data: bytes) -> None:
    """SetVariable(name, guid, attributes, data); OSError (EACCES/EINVAL from the firmware:
    a bad signature or a stale timestamp) when it refuses."""
    target = path(efivars, name, guid)
    with _mutable(target):
        fd = os.open(target, os.O_WRONLY | os.O_CREAT, 0o644)  # no O_TRUNC: efivarfs has no truncation
        try:
            written = os.write(fd, struct.pack("<I", attributes) + data)
        finally:
            os.close(fd)
    if written != 4 + len(data):
        raise OSError(errno.EIO, f"{target}: a short write ({written} of {4 + len(data)} bytes)")


@contextlib.contextmanager
def _mutable(target: Path) -> Iterator[None]:
    """``target`` without the immutable flag for the block (a file not there yet has none)."""
    try:
        fd = os.open(target, os.O_RDONLY)
    except FileNotFoundError:
        yield
        return
    try:
        flags = _flags(fd)
        if flags & _FS_IMMUTABLE_FL:
            fcntl.ioctl(fd, _FS_IOC_SETFLAGS, struct.pack("i", flags & ~_FS_IMMUTABLE_FL))
        try:
            yield
        finally:
            if flags & _FS_IMMUTABLE_FL:
                fcntl.ioctl(fd, _FS_IOC_SETFLAGS, struct.pack("i", flags))
    finally:
        os.close(fd)


def _flags(fd: int) -> int:
    try:
        value: int = struct.unpack("i", fcntl.ioctl(fd, _FS_IOC_GETFLAGS, struct.pack("i", 0)))[0]
    except OSError as error:
        if error.errno in (errno.ENOTTY, errno.EOPNOTSUPP, errno.EINVAL):  # a plain file system in tests
            return 0
        raise
    return value
