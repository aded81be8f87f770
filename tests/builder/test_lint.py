"""The package-manager lint, fed trees that must fail and trees that must pass."""

from __future__ import annotations

import compileall
import os
import py_compile
import re
import subprocess
import sys
import sysconfig
from pathlib import Path

from builder import payload
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


# ---- berth's own code in the root (builder/payload.py) --------------------------------


OFF_HOST_LIBRARIES = ("starlette", "uvicorn", "psycopg", "matplotlib", "qemu", "httpx", "pytest",
                      "hypothesis", "schemathesis")


def _staged(root: Path) -> Path:
    """The host payload as `berth build` stages it, byte-compiled the way
    mkosi.postinst does (here by this interpreter, not the image's)."""
    payload.stage(root)
    python = root / payload.PYTHON_DIR
    assert compileall.compile_dir(
        python, quiet=1, invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH
    )
    return python


def _site_free_python(*args: str, path: Path) -> subprocess.CompletedProcess[str]:
    """This interpreter without site (so no editable install of the repository) and
    only ``path`` plus the third-party packages on sys.path."""
    env = dict(os.environ, PYTHONPATH=f"{path}{os.pathsep}{sysconfig.get_paths()['purelib']}")
    return subprocess.run(
        [sys.executable, "-S", *args], env=env, capture_output=True, text=True, check=False,
        cwd=path,
    )


def test_the_staged_host_payload_passes_and_holds_only_host_code(tmp_path: Path) -> None:
    _clean_tree(tmp_path)
    python = _staged(tmp_path)
    assert lint(tmp_path) == []
    assert sorted(p.name for p in python.iterdir()) == ["cli", "updater"]
    assert (python / "updater/agent/agent.py").is_file()
    for rel in payload.OFF_HOST:
        assert not (python / rel).exists(), rel
    assert not list(python.rglob("test_*.py"))


def test_off_host_and_test_code_in_the_root_fails(tmp_path: Path) -> None:
    _clean_tree(tmp_path)
    python = _staged(tmp_path)
    for rel in ("updater/fleet/app.py", "updater/publish/repository.py", "builder/build.py",
                "qemu/lab.py", "tests/conftest.py", "updater/agent/test_core.py"):
        _touch(python, rel)
        compileall.compile_file(python / rel, quiet=1)
    assert lint(tmp_path) == [
        f"not host code: /{payload.PYTHON_DIR}/{rel}"
        for rel in ("builder", "qemu", "tests", "updater/fleet", "updater/publish")
    ] + [
        f"test module: /{payload.PYTHON_DIR}/{rel}"
        for rel in ("tests/conftest.py", "updater/agent/test_core.py")
    ]


def test_python_without_its_pyc_fails(tmp_path: Path) -> None:
    _clean_tree(tmp_path)
    python = _staged(tmp_path)
    for pyc in (python / "updater/__pycache__").glob("wire.*.pyc"):
        pyc.unlink()
    _touch(tmp_path, "usr/lib/berth/extra.py")
    assert lint(tmp_path) == [
        "not byte-compiled: /usr/lib/berth/extra.py",
        f"not byte-compiled: /{payload.PYTHON_DIR}/updater/wire.py",
    ]


def test_every_shipped_module_imports_from_the_payload_alone(tmp_path: Path) -> None:
    python = _staged(tmp_path)
    modules = sorted(
        ".".join(p.relative_to(python).with_suffix("").parts).removesuffix(".__init__")
        for p in python.rglob("*.py")
    )
    assert "updater.agent.service" in modules
    check = (
        "import importlib, sys\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        "ours = ('cli', 'updater', 'builder', 'qemu')\n"
        "for name, module in sorted(sys.modules.items()):\n"
        "    if name.split('.')[0] in ours:\n"
        f"        assert (getattr(module, '__file__', None) or '').startswith({str(python)!r}), name\n"
        # The image has python3-tuf/-requests/-yaml/-cryptography/-systemd/-zstandard,
        # none of the server's, the lab's or the test suite's libraries.
        f"off_host = {OFF_HOST_LIBRARIES!r}\n"
        "assert not [n for n in sys.modules if n.split('.')[0] in off_host], sorted(sys.modules)\n"
    )
    result = _site_free_python("-c", check, path=python)
    assert result.returncode == 0, result.stderr


def test_a_hosts_berth_help_shows_only_host_verbs(tmp_path: Path) -> None:
    python = _staged(tmp_path)
    result = _site_free_python("-m", "cli.main", "--help", path=python)
    assert result.returncode == 0, result.stderr
    # argparse lists each verb indented by four spaces under "positional arguments".
    verbs = re.findall(r"^    (\w\S*)", result.stdout, re.MULTILINE)
    assert verbs == ["agent", "provision"]


def _bzimage() -> bytes:
    """The first bytes of an x86 kernel as the boot protocol lays them out."""
    head = bytearray(0x400)
    head[0x1FE:0x200] = b"\x55\xaa"
    head[0x202:0x206] = b"HdrS"
    return bytes(head)


def test_a_kernel_image_fails_the_root_whatever_its_name(tmp_path: Path) -> None:
    _clean_tree(tmp_path)
    for rel in ("usr/lib/modules/6.12.0-cloud-amd64/vmlinuz", "opt/spare-kernel"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(_bzimage())
    assert lint(tmp_path) == [
        "kernel image: /opt/spare-kernel",
        "kernel image: /usr/lib/modules/6.12.0-cloud-amd64/vmlinuz",
    ]


def test_the_link_mkosi_found_the_kernel_by_passes(tmp_path: Path) -> None:
    """What images/host/mkosi.finalize leaves: the kernel moved out, a dangling link."""
    _clean_tree(tmp_path)
    modules = tmp_path / "usr/lib/modules/6.12.0-cloud-amd64"
    modules.mkdir(parents=True)
    (modules / "vmlinuz").symlink_to("../../../../var/lib/berth-build-kernel/6.12.0-cloud-amd64")
    (tmp_path / "usr/lib/systemd/boot/efi").mkdir(parents=True)
    (tmp_path / "usr/lib/systemd/boot/efi/linuxx64.efi.stub").write_bytes(b"MZ" + bytes(0x400))
    assert lint(tmp_path) == []
