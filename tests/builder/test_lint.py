"""The package-manager lint, fed trees that must fail and trees that must pass."""

from __future__ import annotations

import os
from pathlib import Path

from builder.lint import lint


def _touch(root: Path, rel: str, mode: int = 0o755) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("x")
    os.chmod(path, mode)


def _clean_tree(root: Path) -> None:
    for rel in ("usr/bin/systemctl", "usr/bin/python3", "usr/sbin/dockerd", "usr/lib/os-release"):
        _touch(root, rel)
    _touch(root, "usr/bin/su", 0o4755)
    _touch(root, "usr/bin/mount", 0o4755)


def test_a_clean_root_passes(tmp_path: Path) -> None:
    _clean_tree(tmp_path)
    assert lint(tmp_path) == []


def test_package_managers_compilers_and_databases_are_all_listed(tmp_path: Path) -> None:
    _clean_tree(tmp_path)
    for rel in (
        "usr/bin/apt",
        "usr/bin/apt-get",
        "usr/bin/dpkg",
        "usr/bin/dpkg-query",
        "var/lib/dpkg/status",
        "var/lib/apt/lists/x",
        "etc/apt/sources.list",
        "usr/bin/pip3",
        "usr/bin/gcc-14",
        "usr/bin/cc",
        "usr/lib/python3/dist-packages/pip/__init__.py",
    ):
        _touch(tmp_path, rel)
    found = lint(tmp_path)
    for expected in (
        "apt: /usr/bin/apt",
        "apt: /usr/bin/apt-get",
        "dpkg: /usr/bin/dpkg",
        "dpkg: /usr/bin/dpkg-query",
        "dpkg database: /var/lib/dpkg",
        "apt database: /var/lib/apt",
        "apt configuration: /etc/apt",
        "pip: /usr/bin/pip3",
        "compiler: /usr/bin/gcc-14",
        "compiler: /usr/bin/cc",
        "pip: /usr/lib/python3/dist-packages/pip",
    ):
        assert expected in found
    assert found == sorted(found)


def test_setuid_and_setgid_outside_the_allowlist_fail(tmp_path: Path) -> None:
    _clean_tree(tmp_path)
    _touch(tmp_path, "usr/local/bin/rootme", 0o4755)
    _touch(tmp_path, "usr/bin/wall", 0o2755)
    assert lint(tmp_path) == [
        "setgid file not in allowlist: /usr/bin/wall",
        "setuid file not in allowlist: /usr/local/bin/rootme",
    ]


def test_a_symlink_named_like_a_package_manager_counts(tmp_path: Path) -> None:
    _clean_tree(tmp_path)
    (tmp_path / "usr/bin/apt").symlink_to("/nonexistent")
    assert lint(tmp_path) == ["apt: /usr/bin/apt"]
