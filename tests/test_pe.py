"""updater/pe.py, the one PE header reader (the UKI's sections, Authenticode's offsets),
on the host's own systemd-boot and on images broken in each way it must refuse."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from updater import pe

BOOT_LOADER = Path("/usr/lib/systemd/boot/efi/systemd-bootx64.efi")


def test_reads_systemd_boot_s_sections_and_the_authenticode_offsets() -> None:
    image = BOOT_LOADER.read_bytes()
    found = pe.sections(image)
    assert {".text", ".data", ".sdmagic"} <= set(found)
    assert found[".sdmagic"].startswith(b"#### LoaderInfo: systemd-boot ")
    headers = pe.headers(image)
    (header,) = struct.unpack_from("<I", image, 0x3C)
    assert headers.checksum == header + 24 + 64
    assert headers.security_entry == header + 24 + 112 + 4 * 8  # PE32+: directories at +112
    assert headers.certificates == (0, 0)  # unsigned
    assert 0 < headers.headers_size <= min(s.raw_offset for s in headers.sections if s.raw_size)


def test_refuses_what_is_not_a_pe_image() -> None:
    image = BOOT_LOADER.read_bytes()
    (header,) = struct.unpack_from("<I", image, 0x3C)
    with pytest.raises(pe.PEError, match="not a PE image"):
        pe.headers(b"\x7fELF" + image[4:])
    with pytest.raises(pe.PEError, match="not a PE image"):
        pe.headers(image[:header] + b"XX\0\0" + image[header + 4 :])
    with pytest.raises(pe.PEError, match="not a well-formed PE image"):
        pe.headers(image[: header + 30])
    bad_magic = image[: header + 24] + b"\x07\x01" + image[header + 26 :]
    with pytest.raises(pe.PEError, match="magic 0x107"):
        pe.headers(bad_magic)
    assert issubclass(pe.PEError, ValueError)  # builder.uki's callers catch ValueError
