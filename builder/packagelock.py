"""The package lock (configs/packages.lock): every Debian package a build installs,
per mkosi image (the initrd, each engine's root), with its version, architecture
and the sha256 of its .deb.

A build asks mkosi for exactly those versions (apt's `name=version`) and checks
what it installed, and each .deb's sha256, against the lock afterwards.
`berth lock --refresh` resolves the set again from an unpinned build and says
what changed. One line per package, sorted, so a refresh reads as a diff.

Packages the build installs and then purges (apt, and what only apt needed) are
marked `removed`: they are checked like the others but not named to apt, since a
package named on apt's command line becomes "manually installed" and apt's purge
of apt would then leave it in the root.

Pure: text in, text or findings out (version order asks dpkg, the authority on it);
the I/O edges are at the end.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from builder import sbom
from cli.errors import UserError

REPO = Path(__file__).resolve().parent.parent
PATH = REPO / "configs" / "packages.lock"
# The sections: one per mkosi image a build makes.
INITRD = "initrd"
REFRESH = "berth lock --refresh"
REMOVED = "removed"
_HEADER = (
    "# berth package lock: every Debian package each mkosi image of a build installs.\n"
    "# `berth build` asks apt for exactly these versions and checks each .deb's sha256.\n"
    f"# Made by `{REFRESH}` (it prints what changed); do not edit by hand.\n"
    "# <name> <version> <arch> <sha256 of the .deb> [removed: purged before the root is final]\n"
)
_SECTION = re.compile(r"\[([a-z0-9-]+)\]")
_NAME = re.compile(r"[a-z0-9][a-z0-9+.-]+")
_VERSION = re.compile(r"[0-9A-Za-z.+~:-]+")
_SHA256 = re.compile(r"[0-9a-f]{64}")
# apt-get's refusal when the mirror no longer has a version asked for by name=version.
_NOT_FOUND = re.compile(r"Version '([^']+)' for '([^']+)' was not found")


@dataclass(frozen=True)
class Locked:
    name: str
    version: str
    arch: str
    sha256: str
    removed: bool = False  # purged by the build: checked, not named to apt

    def line(self) -> str:
        fields = [self.name, self.version, self.arch, self.sha256]
        return " ".join([*fields, REMOVED] if self.removed else fields)


Lock = Mapping[str, tuple[Locked, ...]]  # section -> packages sorted by name


def parse(text: str, source: str) -> dict[str, tuple[Locked, ...]]:
    """The lock's sections; a malformed line is one error naming the file and line."""
    sections: dict[str, list[Locked]] = {}
    current: list[Locked] | None = None
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{source} line {number}"
        header = _SECTION.fullmatch(line)
        if header:
            if header.group(1) in sections:
                raise UserError(f"{where}: section [{header.group(1)}] appears twice")
            current = sections[header.group(1)] = []
            continue
        if current is None:
            raise UserError(f"{where}: a package before the first [section]")
        fields = line.split()
        if len(fields) not in (4, 5) or (len(fields) == 5 and fields[4] != REMOVED):
            raise UserError(
                f"{where}: expected '<name> <version> <arch> <sha256> [{REMOVED}]', got {line!r}"
            )
        name, version, arch, sha256 = fields[:4]
        for what, value, rule in (
            ("name", name, _NAME),
            ("version", version, _VERSION),
            ("arch", arch, _NAME),
            ("sha256", sha256, _SHA256),
        ):
            if not rule.fullmatch(value):
                raise UserError(f"{where}: not a package {what}: {value!r}")
        if any(p.name == name for p in current):
            raise UserError(f"{where}: {name} appears twice in its section")
        current.append(Locked(name, version, arch, sha256, removed=len(fields) == 5))
    return {k: tuple(sorted(v, key=lambda p: p.name)) for k, v in sections.items()}


def render(lock: Lock) -> str:
    """The lock file's text: the header, then each section sorted by name."""
    out = [_HEADER]
    for section in sorted(lock, key=lambda s: (s != INITRD, s)):
        out.append(f"\n[{section}]\n")
        out.extend(p.line() + "\n" for p in sorted(lock[section], key=lambda p: p.name))
    return "".join(out)


def digest(text: str) -> str:
    """The lock's hash, as the manifest's provenance records it."""
    return hashlib.sha256(text.encode()).hexdigest()


def section(lock: Lock, name: str, source: str) -> tuple[Locked, ...]:
    if name not in lock:
        raise UserError(f"{source} has no [{name}] section: refresh it with `{REFRESH}`")
    return lock[name]


def pins(packages: Iterable[Locked]) -> list[str]:
    """apt's `name=version` for each package the image keeps (every dependency too)."""
    return [f"{p.name}={p.version}" for p in packages if not p.removed]


def resolved(
    status: str, final: Iterable[str] | None, deb_sha256: Mapping[str, str]
) -> tuple[Locked, ...]:
    """A section from what a build installed: the dpkg `status` taken before any purge,
    the names in the final root (None: nothing was purged), the .debs' sha256 by file
    name. A package without its .deb is an error: the lock could not check it."""
    kept = None if final is None else set(final)
    found = []
    for fields in sbom.installed(status):
        name, version = fields["Package"], fields["Version"]
        arch = fields.get("Architecture", "all")
        file_name = sbom.deb_file_name(name, version, arch)
        if file_name not in deb_sha256:
            raise UserError(
                f"no {file_name} in mkosi's package cache to lock {name} {version} by its sha256"
            )
        found.append(
            Locked(
                name,
                version,
                arch,
                deb_sha256[file_name],
                removed=kept is not None and name not in kept,
            )
        )
    return tuple(sorted(found, key=lambda p: p.name))


def mismatches(locked: Iterable[Locked], built: Iterable[Locked]) -> list[str]:
    """Where what a build installed differs from its lock section, one finding each."""
    want = {p.name: p for p in locked}
    got = {p.name: p for p in built}
    found = []
    for name in sorted(want.keys() | got.keys()):
        w, g = want.get(name), got.get(name)
        if g is None:
            found.append(f"{name} {w.version if w else ''} is locked but was not installed")
        elif w is None:
            found.append(f"{name} {g.version} was installed but is not in the lock")
        elif (w.version, w.arch) != (g.version, g.arch):
            found.append(
                f"{name}: the lock pins {w.version} ({w.arch}), the build installed "
                f"{g.version} ({g.arch})"
            )
        elif w.sha256 != g.sha256:
            found.append(
                f"{name} {g.version}: the .deb's sha256 is {g.sha256}, the lock has {w.sha256}"
            )
        elif w.removed != g.removed:
            found.append(
                f"{name}: the lock says it is {'' if w.removed else 'not '}purged "
                "from the root, the build did otherwise"
            )
    return found


def mismatch_error(source: str, section_name: str, found: list[str]) -> UserError:
    more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
    return UserError(
        f"the build does not match {source} [{section_name}]: {found[0]}{more}; if the "
        f"change is wanted, refresh the lock with `{REFRESH}`"
    )


def unavailable(log_text: str, source: str) -> UserError | None:
    """The clear error for apt refusing a pinned version the mirror no longer has."""
    match = _NOT_FOUND.search(log_text)
    if match is None:
        return None
    version, name = match.groups()
    return UserError(
        f"the mirror no longer has {name} {version}, pinned in {source}: refresh the lock "
        f"with `{REFRESH}` (it prints what changes)"
    )


def changes(old: Lock, new: Lock) -> list[str]:
    """What a refresh changed, one line each: added, removed, upgraded/downgraded,
    same version with another .deb, per section."""
    lines = []
    for name in sorted(old.keys() | new.keys(), key=lambda s: (s != INITRD, s)):
        before = {p.name: p for p in old.get(name, ())}
        after = {p.name: p for p in new.get(name, ())}
        for pkg in sorted(before.keys() | after.keys()):
            b, a = before.get(pkg), after.get(pkg)
            if b is None and a is not None:
                lines.append(f"[{name}] added {pkg} {a.version}")
            elif a is None and b is not None:
                lines.append(f"[{name}] removed {pkg} {b.version}")
            elif a is not None and b is not None and a != b:
                if a.version != b.version:
                    direction = "upgraded" if _newer(a.version, b.version) else "downgraded"
                    lines.append(f"[{name}] {direction} {pkg} {b.version} -> {a.version}")
                elif a.sha256 != b.sha256:
                    lines.append(f"[{name}] rebuilt {pkg} {a.version}: another .deb (sha256)")
                else:
                    lines.append(
                        f"[{name}] {pkg} {a.version} now {'purged' if a.removed else 'kept'}"
                    )
    return lines


def _newer(a: str, b: str) -> bool:
    """Debian's version order (deb-version(7)): is `a` later than `b`? dpkg's own
    comparison (on every host that builds with mkosi's apt), not a second one here."""
    return subprocess.run(["dpkg", "--compare-versions", a, "gt", b], check=False).returncode == 0


# I/O edges.


def read(path: Path = PATH) -> tuple[dict[str, tuple[Locked, ...]], str]:
    """(sections, the lock's sha256) of the lock file."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise UserError(f"{shown(path)}: no package lock: make one with `{REFRESH}`") from None
    except OSError as error:
        raise UserError(f"{shown(path)}: cannot read: {error.strerror}") from error
    return parse(text, shown(path)), digest(text)


def built(output_dir: Path, final: Iterable[str] | None, archives: Path) -> tuple[Locked, ...]:
    """What one mkosi run installed, from sbom.postinst's copy of the dpkg status in
    `output_dir/sbom-input` and the .debs in mkosi's package cache."""
    status = (output_dir / "sbom-input" / "status").read_text(errors="replace")
    names = [
        sbom.deb_file_name(f["Package"], f["Version"], f.get("Architecture", "all"))
        for f in sbom.installed(status)
    ]
    return resolved(status, final, sbom.deb_hashes(archives, names))


def shown(path: Path) -> str:
    """The lock's path as errors name it: relative to the repository when inside it."""
    try:
        return str(path.resolve().relative_to(REPO))
    except ValueError:
        return str(path)
