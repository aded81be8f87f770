"""What an initrd holds: the names in its (possibly several, zstd-compressed or
plain) newc cpio archives, as the kernel unpacks them one after the other."""

from __future__ import annotations

import zstandard

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
NEWC_MAGIC = b"070701"
HEADER = 110  # newc: magic + 13 eight-digit hex fields


def _cpio_names(data: bytes, offset: int, names: list[str]) -> int:
    """Names of one newc archive from ``offset``; returns the offset after its trailer.
    Headers and data are 4-byte aligned from the archive's own start."""
    start = offset

    def align(position: int) -> int:
        return start + ((position - start + 3) & ~3)

    while data[offset:offset + 6] == NEWC_MAGIC:
        size = int(data[offset + 54:offset + 62], 16)
        name_size = int(data[offset + 94:offset + 102], 16)
        name = data[offset + HEADER:offset + HEADER + name_size - 1].decode("utf-8", "replace")
        offset = align(align(offset + HEADER + name_size) + size)
        if name == "TRAILER!!!":
            break
        names.append(name)
    return offset


def names(initrd: bytes) -> list[str]:
    found: list[str] = []
    offset = 0
    while offset < len(initrd):
        if initrd[offset:offset + 6] == NEWC_MAGIC:
            offset = _cpio_names(initrd, offset, found)
        elif initrd[offset:offset + 4] == ZSTD_MAGIC:
            # One frame: its archives, then whatever follows it.
            inflate = zstandard.ZstdDecompressor().decompressobj()
            found += names(inflate.decompress(initrd[offset:]))
            offset = len(initrd) - len(inflate.unused_data)
        elif initrd[offset] == 0:
            offset += 1  # padding between archives
        else:
            raise ValueError(f"initrd: unknown data at byte {offset}")
    return found


def kernel_modules(initrd: bytes) -> set[str]:
    """Module names (``hv_storvsc``, ``nvme``…) the initrd carries."""
    result = set()
    for name in names(initrd):
        base = name.rsplit("/", 1)[-1]
        for suffix in (".ko", ".ko.xz", ".ko.zst", ".ko.gz"):
            if base.endswith(suffix):
                result.add(base[: -len(suffix)].replace("-", "_"))
    return result
