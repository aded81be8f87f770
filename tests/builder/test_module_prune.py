"""The root's kernel-module pruning (builder/mkosi/prune-modules.finalize) on a small fake
module tree: dropped subtrees go, kept modules and what they need stay, a module that
needs a dropped one goes too, and a kept module the kernel lacks fails the build."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from builder.lint import module_findings
from tests.builder import mkosiscripts

prune = mkosiscripts.load("prune-modules.finalize")

VERSION = "6.12.0-test-cloud-amd64"
DEP = {
    "kernel/fs/overlayfs/overlay.ko.xz": [],
    "kernel/net/bridge/bridge.ko.xz": ["kernel/net/802/stp.ko.xz"],
    "kernel/net/802/stp.ko.xz": [],
    "kernel/drivers/comedi/comedi.ko.xz": [],
    "kernel/drivers/comedi/drivers/ni_pcimio.ko.xz": ["kernel/drivers/comedi/comedi.ko.xz"],
    "kernel/drivers/infiniband/core/ib_core.ko.xz": [],
    # Outside every dropped subtree, but cannot load without ib_core.
    "kernel/drivers/nvme/host/nvme-rdma.ko.xz": ["kernel/drivers/infiniband/core/ib_core.ko.xz"],
    "kernel/drivers/hid/hid.ko.xz": [],
    "kernel/drivers/hid/hid-generic.ko.xz": ["kernel/drivers/hid/hid.ko.xz"],
    "kernel/drivers/hid/hid-apple.ko.xz": ["kernel/drivers/hid/hid.ko.xz"],
}
BUILTIN = ["kernel/fs/ext4/ext4.ko"]
DROPPED = ("kernel/drivers/comedi/*", "kernel/drivers/infiniband/*", "kernel/drivers/hid/hid-*")
KEPT = ("overlay", "bridge", "ext4", "hid_generic")


def _tree(root: Path) -> Path:
    directory = root / "usr/lib/modules" / VERSION
    for path in DEP:
        (directory / path).parent.mkdir(parents=True, exist_ok=True)
        (directory / path).write_bytes(b"\xfd7zXZ" + path.encode())
    (directory / "modules.dep").write_text("".join(f"{p}: {' '.join(d)}\n" for p, d in DEP.items()))
    (directory / "modules.builtin").write_text("".join(f"{p}\n" for p in BUILTIN))
    return directory


def test_dropped_subtrees_and_what_needs_them_go_kept_modules_stay() -> None:
    chosen = prune.plan(DEP, BUILTIN, dropped=DROPPED, kept=KEPT)
    assert chosen.dropped == (
        "kernel/drivers/comedi/comedi.ko.xz",
        "kernel/drivers/comedi/drivers/ni_pcimio.ko.xz",
        "kernel/drivers/hid/hid-apple.ko.xz",
        "kernel/drivers/infiniband/core/ib_core.ko.xz",
        "kernel/drivers/nvme/host/nvme-rdma.ko.xz",
    )
    assert chosen.because_of == {
        "kernel/drivers/nvme/host/nvme-rdma.ko.xz": "kernel/drivers/infiniband/core/ib_core.ko.xz"}


def test_a_kept_module_and_what_it_needs_stay_inside_a_dropped_subtree() -> None:
    chosen = prune.plan(DEP, BUILTIN, dropped=(*DROPPED, "kernel/net/*"), kept=KEPT)
    assert "kernel/net/bridge/bridge.ko.xz" not in chosen.dropped
    assert "kernel/net/802/stp.ko.xz" not in chosen.dropped  # bridge needs it


def test_a_kept_module_the_kernel_lacks_fails_the_build() -> None:
    with pytest.raises(prune.PruneError, match="kept modules: ena, xt_MASQUERADE"):
        prune.plan(DEP, BUILTIN, dropped=DROPPED, kept=(*KEPT, "xt_MASQUERADE", "ena"))


def test_pruning_a_tree_removes_the_files_and_the_directories_it_empties(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(prune, "DROPPED", tuple((p, "test") for p in DROPPED))
    monkeypatch.setattr(prune, "KEPT", tuple((n, "test") for n in KEPT))
    directory = _tree(tmp_path)
    sizes = {p: (directory / p).stat().st_size for p in DEP}
    pruned = prune.prune_version(directory)
    left = sorted(p.relative_to(directory).as_posix() for p in directory.rglob("*.ko*"))
    assert left == sorted(set(DEP) - set(pruned.plan.dropped))
    assert pruned.bytes == sum(sizes[p] for p in pruned.plan.dropped)
    assert not (directory / "kernel/drivers/comedi").exists()
    assert not (directory / "kernel/drivers/infiniband").exists()
    assert not (directory / "kernel/drivers/nvme").exists()  # nvme-rdma was its only module
    assert (directory / "kernel/drivers/hid").is_dir()
    # Until depmod runs again, the lint sees modules.dep naming what is gone.
    assert "modules.dep names a missing module: " \
        f"/usr/lib/modules/{VERSION}/kernel/drivers/comedi/comedi.ko.xz" in module_findings(tmp_path)


def test_main_runs_depmod_per_kernel_and_leaves_the_sboms_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(prune, "DROPPED", tuple((p, "test") for p in DROPPED))
    monkeypatch.setattr(prune, "KEPT", tuple((n, "test") for n in KEPT))
    _tree(tmp_path / "root")
    ran: list[list[str]] = []
    monkeypatch.setattr(prune.subprocess, "run", lambda command, check: ran.append(command))
    assert prune.main(tmp_path / "root", tmp_path / "out") == 0
    assert ran == [["mkosi-chroot", "depmod", "--all", VERSION]]
    record = json.loads((tmp_path / "out/sbom-input/pruned-modules.json").read_text())
    assert record["subtrees"] == list(DROPPED)
    assert record["kernels"][VERSION]["modules"] == 5


def test_a_kernel_without_a_kept_module_stops_the_script(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(prune, "KEPT", (("ena", "EC2's NIC"),))
    _tree(tmp_path)
    assert prune.main(tmp_path, None) == 1
    assert "the kernel has none of these kept modules: ena" in capsys.readouterr().err


def test_the_lint_finds_a_module_modules_dep_does_not_name(tmp_path: Path) -> None:
    directory = _tree(tmp_path)
    assert module_findings(tmp_path) == []
    (directory / "kernel/drivers/extra.ko.xz").write_bytes(b"x")
    assert module_findings(tmp_path) == [
        f"kernel module not in modules.dep (depmod did not run): /usr/lib/modules/{VERSION}/kernel/drivers/extra.ko.xz"]


def test_each_dropped_subtree_says_why_and_each_kept_module_is_named_once() -> None:
    names = [name for name, _ in prune.KEPT]
    assert len(set(names)) == len(names)
    for pattern, reason in prune.DROPPED:
        assert pattern.startswith("kernel/") and pattern.endswith("*") and reason, pattern
