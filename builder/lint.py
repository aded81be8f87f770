"""Proof that a root file system holds no package manager, compiler, stray setuid file,
private key, kernel image (the kernel is the UKI's) or berth code that does not run on a host (builder/payload.py's rule),
and that each kernel's modules.dep matches its module files (depmod ran after pruning).

`lint(root)` walks an extracted root and returns what it found; the build
fails on any finding and lists them all.
"""

from __future__ import annotations

import fnmatch
import os
import re
import stat
from pathlib import Path

from builder import payload

# Paths (relative to the root, glob patterns) that must not exist.
FORBIDDEN: tuple[tuple[str, str], ...] = (
    ("usr/bin/apt*", "apt"),
    ("usr/bin/dpkg*", "dpkg"),
    ("usr/sbin/dpkg*", "dpkg"),
    ("usr/lib/apt", "apt"),
    ("usr/lib/dpkg", "dpkg"),
    ("var/lib/dpkg", "dpkg database"),
    ("var/lib/apt", "apt database"),
    ("etc/apt", "apt configuration"),
    ("usr/bin/pip*", "pip"),
    ("usr/lib/python3*/dist-packages/pip", "pip"),
    ("usr/lib/python3/dist-packages/pip", "pip"),
    ("usr/bin/gcc*", "compiler"),
    ("usr/bin/cc", "compiler"),
    ("usr/bin/c++", "compiler"),
    ("usr/bin/g++*", "compiler"),
    ("usr/bin/clang*", "compiler"),
    ("usr/bin/*-linux-gnu-gcc*", "compiler"),
    ("usr/bin/as", "assembler"),
    ("usr/bin/ld", "linker"),
    ("usr/bin/rpm*", "rpm"),
    ("usr/bin/dnf*", "dnf"),
)

# setuid/setgid programs a container host legitimately needs.
SETID_ALLOWED: frozenset[str] = frozenset(
    {
        "usr/bin/su",
        "usr/bin/mount",
        "usr/bin/umount",
        "usr/bin/passwd",
        "usr/bin/newgrp",
        "usr/bin/chsh",
        "usr/bin/chfn",
        "usr/bin/gpasswd",
        "usr/bin/expiry",
        "usr/bin/chage",
        "usr/bin/newuidmap",
        "usr/bin/newgidmap",
        "usr/sbin/unix_chkpwd",
        "usr/lib/openssh/ssh-keysign",
        "usr/lib/dbus-1.0/dbus-daemon-launch-helper",
    }
)

# A file that is a PEM private key (the Secure Boot and TUF keys stay on the build host;
# a host makes its own SSH keys at first boot, on /var).
_PRIVATE_KEY = re.compile(rb"\s*-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----")
# Bytes read from the start of each regular file: enough for both checks.
_HEAD = 0x206


def lint(root: Path) -> list[str]:
    """Findings, one line each, sorted; empty when the root is clean."""
    findings: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = path.relative_to(root).as_posix()
            for pattern, what in FORBIDDEN:
                if fnmatch.fnmatchcase(rel, pattern):
                    findings.add(f"{what}: /{rel}")
            mode = path.lstat().st_mode
            if (
                stat.S_ISREG(mode)
                and mode & (stat.S_ISUID | stat.S_ISGID)
                and rel not in SETID_ALLOWED
            ):
                kind = "setuid" if mode & stat.S_ISUID else "setgid"
                findings.add(f"{kind} file not in allowlist: /{rel}")
            if stat.S_ISREG(mode):
                head = _head(path)
                if _PRIVATE_KEY.match(head):
                    findings.add(f"private key: /{rel}")
                if _is_kernel(head):
                    findings.add(f"kernel image: /{rel}")
    findings.update(payload.findings(root))
    findings.update(module_findings(root))
    return sorted(findings)


def module_findings(root: Path) -> list[str]:
    """Each /usr/lib/modules/<version>/: a module modules.dep names (as a module or as a
    dependency) that is not there, or a module file it does not name. Either means depmod
    did not run after modules were removed: modprobe would fail, or not find a module."""
    findings = []
    for directory in sorted((root / "usr/lib/modules").glob("*/")):
        dep = directory / "modules.dep"
        if not dep.is_file():
            continue
        named: set[str] = set()
        for line in dep.read_text().splitlines():
            path, _, needs = line.partition(":")
            named.update([path.strip(), *needs.split()])
        named.discard("")
        shown = f"/usr/lib/modules/{directory.name}"
        findings += [f"modules.dep names a missing module: {shown}/{path}"
                     for path in sorted(named) if not (directory / path).is_file()]
        present = {path.relative_to(directory).as_posix() for path in directory.rglob("*.ko*")}
        findings += [f"kernel module not in modules.dep (depmod did not run): {shown}/{path}"
                     for path in sorted(present - named)]
    return findings


def _head(path: Path) -> bytes:
    try:
        with path.open("rb") as f:
            return f.read(_HEAD)
    except OSError:  # unreadable (a socket or fifo would not be S_ISREG): nothing to say
        return b""


def _is_kernel(head: bytes) -> bool:
    """A Linux x86 boot image (bzImage, what Debian's vmlinuz is): the boot sector's 55 AA
    and the setup header's "HdrS" magic (the kernel's boot protocol, Documentation/arch/x86/boot.rst)."""
    return head[0x1FE:0x200] == b"\x55\xaa" and head[0x202:0x206] == b"HdrS"
