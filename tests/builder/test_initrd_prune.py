"""prune-initrd.finalize on trees made of this machine's own ELF files: what the initrd
runs stays with every library it loads, everything else goes, and a tree that lacks a
needed library is refused."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
from pathlib import Path
from types import ModuleType

import pytest

from tests.builder import mkosiscripts

LIBS = "usr/lib/x86_64-linux-gnu"


def _script() -> ModuleType:
    return mkosiscripts.load("prune-initrd.finalize")


def _libraries_of(program: str) -> list[Path]:
    out = subprocess.run(["ldd", program], capture_output=True, text=True, check=True).stdout
    return [Path(line.split("=>")[1].split("(")[0].strip()) for line in out.splitlines() if "=>" in line]


def _tree(root: Path) -> None:
    """cat (kept) and tar (not), the libraries of both, one library nobody needs, links."""
    for directory in ("usr/bin", LIBS, "usr/lib64"):
        (root / directory).mkdir(parents=True)
    for program in ("cat", "tar"):
        shutil.copy(f"/usr/bin/{program}", root / "usr/bin" / program)
        for library in _libraries_of(f"/usr/bin/{program}"):
            shutil.copy(library, root / LIBS / library.name)
    loader = Path("/lib64/ld-linux-x86-64.so.2").resolve()
    shutil.copy(loader, root / LIBS / loader.name)
    (root / "usr/lib64/ld-linux-x86-64.so.2").symlink_to(f"../lib/x86_64-linux-gnu/{loader.name}")
    shutil.copy(Path("/usr/lib/x86_64-linux-gnu/libgmp.so.10").resolve(), root / LIBS / "libgmp.so.10.4.1")
    (root / LIBS / "libgmp.so.10").symlink_to("libgmp.so.10.4.1")
    (root / "usr/bin/gtar").symlink_to("tar")
    (root / "usr/bin/sh").symlink_to("/usr/bin/cat")  # absolute: the initrd's own /usr/bin/cat
    (root / "usr/bin/zcat").write_text("#!/bin/sh\nexec gzip -cd \"$@\"\n")


def test_the_programs_it_runs_stay_with_their_libraries_and_the_rest_goes(tmp_path: Path) -> None:
    _tree(tmp_path)
    os.utime(tmp_path / "usr/bin", ns=(1_000_000_000, 1_000_000_000))

    removed = _script().prune(tmp_path)

    assert {"usr/bin/tar", "usr/bin/gtar", f"{LIBS}/libgmp.so.10.4.1", f"{LIBS}/libgmp.so.10"} <= set(removed)
    # tar's own libraries go with it; cat's stay.
    assert f"{LIBS}/libacl.so.1" in removed
    assert (tmp_path / LIBS / "libc.so.6").is_file()
    assert (tmp_path / "usr/lib64/ld-linux-x86-64.so.2").exists()
    assert (tmp_path / "usr/bin/cat").is_file()
    assert (tmp_path / "usr/bin/sh").is_symlink()
    assert (tmp_path / "usr/bin/zcat").is_file()  # not ELF: a script costs nothing
    # The cpio records directory times: pruning leaves them as they were.
    assert (tmp_path / "usr/bin").stat().st_mtime_ns == 1_000_000_000


def test_a_kept_program_whose_library_is_missing_fails_the_build(tmp_path: Path) -> None:
    _tree(tmp_path)
    (tmp_path / LIBS / "libc.so.6").unlink()

    with pytest.raises(RuntimeError, match=r"libc\.so\.6 \(needed by /usr/bin/cat\)"):
        _script().prune(tmp_path)


def test_a_library_named_by_a_dlopen_note_stays(tmp_path: Path) -> None:
    """systemd names what it may dlopen() in `.note.dlopen` (libcryptsetup for
    systemd-veritysetup, libkmod for udev); the loader never sees those names."""
    script = _script()
    payload = json.dumps([{"feature": "cryptsetup", "soname": ["libgmp.so.10"]}]).encode() + b"\0"
    note = struct.pack("<III", 4, len(payload), script.NT_FDO_DLOPEN) + b"FDO\0" + payload
    note += b"\0" * (-len(note) % 4)
    assert script._dlopen_notes(note + note) == ["libgmp.so.10", "libgmp.so.10"]

    _tree(tmp_path)
    elf = script.read_elf((tmp_path / "usr/bin/cat").read_bytes())
    assert elf is not None and "libc.so.6" in elf.needed and elf.interpreter == "/lib64/ld-linux-x86-64.so.2"
    noted = script.Elf(elf.interpreter, elf.needed, ("libgmp.so.10",), elf.runpath)
    real_read = script.read_elf
    script.read_elf = lambda data: noted if data == (tmp_path / "usr/bin/cat").read_bytes() else real_read(data)
    removed = script.prune(tmp_path)
    assert f"{LIBS}/libgmp.so.10.4.1" not in removed
    assert (tmp_path / LIBS / "libgmp.so.10.4.1").is_file()


def test_anything_else_is_not_an_elf_file_it_reads() -> None:
    script = _script()
    assert script.read_elf(b"#!/bin/sh\n") is None
    assert script.read_elf(b"\x7fELF\x01\x01" + b"\0" * 58) is None  # 32-bit
