"""The package lock's pure parts: parse and render, the pins apt gets, what a build
installed against the lock, the refresh's change list and the errors' wording."""

from __future__ import annotations

import pytest

from builder import packagelock
from builder.packagelock import Locked
from cli.errors import UserError

A = "a" * 64
B = "b" * 64


def _status(*packages: tuple[str, str, str]) -> str:
    return "\n\n".join(
        f"Package: {name}\nStatus: install ok installed\nVersion: {version}\nArchitecture: {arch}"
        for name, version, arch in packages
    )


LOCK = packagelock.render(
    {
        "docker": (
            Locked("libc6", "2.41-12", "amd64", A),
            Locked("apt", "3.0.3", "amd64", B, removed=True),
        ),
        "initrd": (Locked("systemd", "1:257.9-1~deb13u1", "amd64", A),),
    }
)


def test_render_sorts_and_parse_reads_it_back() -> None:
    lines = LOCK.splitlines()
    body = [line for line in lines if line and not line.startswith("#")]
    assert body == [
        "[initrd]",
        f"systemd 1:257.9-1~deb13u1 amd64 {A}",
        "[docker]",
        f"apt 3.0.3 amd64 {B} removed",
        f"libc6 2.41-12 amd64 {A}",
    ]
    lock = packagelock.parse(LOCK, "x.lock")
    assert packagelock.render(lock) == LOCK
    assert lock["docker"][0] == Locked("apt", "3.0.3", "amd64", B, removed=True)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (f"libc6 2.41 amd64 {A}\n", "x.lock line 1: a package before the first [section]"),
        ("[docker]\nlibc6 2.41 amd64\n", "x.lock line 2: expected '<name> <version>"),
        (f"[docker]\nlibc6 2.41 amd64 {A} gone\n", "x.lock line 2: expected"),
        ("[docker]\nlibc6 2.41 amd64 abc\n", "x.lock line 2: not a package sha256: 'abc'"),
        (f"[docker]\nLibc6 2.41 amd64 {A}\n", "x.lock line 2: not a package name: 'Libc6'"),
        (f"[docker]\nlibc6 2.41 amd64 {A}\nlibc6 2.42 amd64 {A}\n", "x.lock line 3: libc6 appears twice"),
        ("[docker]\n[docker]\n", "x.lock line 2: section [docker] appears twice"),
    ],
)
def test_malformed_lock_is_one_error_naming_the_line(text: str, message: str) -> None:
    with pytest.raises(UserError, match="^" + message.replace("[", r"\[").replace("]", r"\]")):
        packagelock.parse(text, "x.lock")


def test_pins_name_every_kept_package_and_not_the_purged_ones() -> None:
    lock = packagelock.parse(LOCK, "x.lock")
    assert packagelock.pins(lock["docker"]) == ["libc6=2.41-12"]
    assert packagelock.pins(lock["initrd"]) == ["systemd=1:257.9-1~deb13u1"]


def test_missing_section_says_how_to_refresh() -> None:
    with pytest.raises(UserError, match=r"x.lock has no \[podman\] section: refresh it with `berth lock --refresh`"):
        packagelock.section(packagelock.parse(LOCK, "x.lock"), "podman", "x.lock")


def test_resolved_marks_what_the_build_purged_and_hashes_each_deb() -> None:
    status = _status(("libc6", "2.41-12", "amd64"), ("apt", "3.0.3", "amd64"), ("tzdata", "2025b-4", "all"))
    hashes = {
        "libc6_2.41-12_amd64.deb": A,
        "apt_3.0.3_amd64.deb": B,
        "tzdata_2025b-4_all.deb": A,
    }
    got = packagelock.resolved(status, ["libc6", "tzdata"], hashes)
    assert got == (
        Locked("apt", "3.0.3", "amd64", B, removed=True),
        Locked("libc6", "2.41-12", "amd64", A),
        Locked("tzdata", "2025b-4", "all", A),
    )
    assert all(not p.removed for p in packagelock.resolved(status, None, hashes))


def test_resolved_needs_every_deb_and_finds_an_epoch_in_its_file_name() -> None:
    status = _status(("systemd", "1:257.9-1", "amd64"))
    assert packagelock.resolved(status, None, {"systemd_1%3a257.9-1_amd64.deb": A})[0].sha256 == A
    with pytest.raises(UserError, match="no systemd_1%3a257.9-1_amd64.deb in mkosi's package cache"):
        packagelock.resolved(status, None, {})


def test_mismatches_name_each_package_and_what_differs() -> None:
    locked = (
        Locked("libc6", "2.41-12", "amd64", A),
        Locked("gone", "1", "all", A),
        Locked("zlib1g", "1:1.3", "amd64", A),
        Locked("apt", "3.0.3", "amd64", A, removed=True),
    )
    built = (
        Locked("libc6", "2.41-13", "amd64", A),
        Locked("new", "2", "all", A),
        Locked("zlib1g", "1:1.3", "amd64", B),
        Locked("apt", "3.0.3", "amd64", A),
    )
    assert packagelock.mismatches(locked, built) == [
        "apt: the lock says it is purged from the root, the build did otherwise",
        "gone 1 is locked but was not installed",
        "libc6: the lock pins 2.41-12 (amd64), the build installed 2.41-13 (amd64)",
        "new 2 was installed but is not in the lock",
        f"zlib1g 1:1.3: the .deb's sha256 is {B}, the lock has {A}",
    ]
    assert packagelock.mismatches(locked, locked) == []
    error = packagelock.mismatch_error("configs/packages.lock", "docker", ["x differs", "y"])
    assert str(error) == (
        "the build does not match configs/packages.lock [docker]: x differs (and 1 more); "
        "if the change is wanted, refresh the lock with `berth lock --refresh`"
    )


def test_apt_refusing_a_pinned_version_becomes_one_clear_line() -> None:
    log = "Reading package lists...\nE: Version '2.41-12' for 'libc6' was not found\n"
    error = packagelock.unavailable(log, "configs/packages.lock")
    assert error is not None
    assert str(error) == (
        "the mirror no longer has libc6 2.41-12, pinned in configs/packages.lock: refresh the "
        "lock with `berth lock --refresh` (it prints what changes)"
    )
    assert packagelock.unavailable("E: Unable to locate package nope\n", "x") is None


def test_changes_say_added_removed_upgraded_and_rebuilt() -> None:
    old = {
        "docker": (
            Locked("a", "1.0-1", "all", A),
            Locked("b", "2:1.0", "all", A),
            Locked("c", "1.0~rc1", "all", A),
            Locked("d", "5", "all", A),
            Locked("e", "1", "all", A),
        )
    }
    new = {
        "docker": (
            Locked("b", "1:9.9", "all", A),
            Locked("c", "1.0", "all", A),
            Locked("d", "5", "all", B),
            Locked("e", "1", "all", A),
            Locked("f", "3", "all", A),
        ),
        "initrd": (Locked("udev", "257", "amd64", A),),
    }
    assert packagelock.changes(old, new) == [
        "[initrd] added udev 257",
        "[docker] removed a 1.0-1",
        "[docker] downgraded b 2:1.0 -> 1:9.9",
        "[docker] upgraded c 1.0~rc1 -> 1.0",
        "[docker] rebuilt d 5: another .deb (sha256)",
        "[docker] added f 3",
    ]
    assert packagelock.changes(new, new) == []


@pytest.mark.parametrize(
    ("older", "newer"),
    [
        ("1.0", "1.0-1"),
        ("1.0~rc1", "1.0"),
        ("1.9", "1.10"),
        ("1.0a", "1.0b"),
        ("1.0a", "1.0+"),
        ("9.9", "1:0.1"),
        ("257.9-1~deb13u1", "257.9-1"),
        ("2.41-12", "2.41-12+deb13u1"),
    ],
)
def test_debian_version_order(older: str, newer: str) -> None:
    assert packagelock._newer(newer, older) and not packagelock._newer(older, newer)


def test_read_names_a_missing_lock_and_hashes_the_text(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(UserError, match="no package lock: make one with `berth lock --refresh`"):
        packagelock.read(tmp_path / "packages.lock")
    (tmp_path / "packages.lock").write_text(LOCK)
    lock, sha256 = packagelock.read(tmp_path / "packages.lock")
    assert sha256 == packagelock.digest(LOCK) and len(sha256) == 64
    assert set(lock) == {"docker", "initrd"}


def test_the_repository_lock_parses_with_both_engines_and_the_initrd() -> None:
    lock, _ = packagelock.read()
    assert {"initrd", "docker", "podman"} <= set(lock)
    for name in ("docker", "podman"):
        kept = {p.name for p in lock[name] if not p.removed}
        assert {"systemd", "linux-image-cloud-amd64", "python3-tuf"} <= kept
        assert "apt" not in kept
