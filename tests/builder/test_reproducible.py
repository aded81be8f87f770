"""What makes two builds the same, without building: derived seeds and times, the mkosi
command line, the finalize script that sets every time (run on a real tree with
real .pyc files), and how `--verify-reproducible` reports a difference."""

from __future__ import annotations

import dataclasses
import json
import os
import py_compile
import shlex
import struct
import subprocess
from pathlib import Path
from types import ModuleType

import pytest

from builder import driver, provenance, reproduce, settings
from cli.errors import UserError
from tests.builder import mkosiscripts
from updater import contract
from updater.gpt import Partition

DEFAULTS = settings.parse({}, "test")
EPOCH = 1796125339


def _finalize_script() -> ModuleType:
    return mkosiscripts.load("normalize-times.finalize")


def test_seed_is_derived_from_the_image_not_drawn() -> None:
    assert provenance.seed(DEFAULTS) == provenance.seed(settings.parse({}, "again"))
    other = settings.override(DEFAULTS, version="1.0.1")
    assert provenance.seed(other) != provenance.seed(DEFAULTS)
    assert provenance.seed(settings.override(DEFAULTS, engine="podman")) != provenance.seed(
        DEFAULTS
    )


def test_epoch_comes_from_the_environment_else_the_commit() -> None:
    assert provenance.epoch_from({}, 1700000000) == 1700000000
    assert provenance.epoch_from({"SOURCE_DATE_EPOCH": "42"}, 1700000000) == 42
    with pytest.raises(UserError, match="SOURCE_DATE_EPOCH"):
        provenance.epoch_from({"SOURCE_DATE_EPOCH": "yesterday"}, 1700000000)
    with pytest.raises(UserError, match="not a git checkout"):
        provenance.epoch_from({}, None)


def test_mkosi_gets_the_epoch_the_seed_and_quoted_mkfs_options(tmp_path: Path) -> None:
    command = driver.image_command(
        DEFAULTS,
        output_dir=tmp_path,
        initrd=tmp_path / "initrd",
        repart_dir=tmp_path,
        extra_trees=[],
        mirror="http://deb.debian.org/debian",
        cache=tmp_path,
        epoch=EPOCH,
        pins=["systemd=257.9-1~deb13u1", "zlib1g=1:1.3.dfsg+really1.3.1-1+b1"],
    )
    assert command[command.index("--source-date-epoch") + 1] == str(EPOCH)
    # The lock's versions, and a cache of their own (mkosi rebuilds one whose packages change).
    assert [a for a in command if a.startswith("--package=")] == [
        "--package=systemd=257.9-1~deb13u1",
        "--package=zlib1g=1:1.3.dfsg+really1.3.1-1+b1",
    ]
    assert command[command.index("--cache-dir") + 1] == str(tmp_path / "mkosi" / "cache-docker-locked")
    assert command[command.index("--seed") + 1] == str(provenance.seed(DEFAULTS))
    # mkosi reads Environment= like a shell: each value must come back whole.
    env = dict(
        shlex.split(a.removeprefix("--environment="))[0].split("=", 1)
        for a in command
        if a.startswith("--environment=")
    )
    assert env == provenance.mkfs_environment(DEFAULTS, EPOCH)
    assert env["E2FSPROGS_FAKE_TIME"] == str(EPOCH)
    assert env["SYSTEMD_REPART_MKFS_OPTIONS_EXT4"].startswith("-E lazy_itable_init=1,hash_seed=")
    assert f"--finalize-script={driver.SCRIPTS / 'normalize-times.finalize'}" in command
    assert f"--finalize-script={driver.SCRIPTS / 'drop-boot-seed.finalize'}" in command
    initrd = driver.initrd_command(
        output_dir=tmp_path, mirror="m", cache=tmp_path, epoch=EPOCH, pins=[]
    )
    assert initrd[initrd.index("--source-date-epoch") + 1] == str(EPOCH)


def test_config_digest_ignores_order_but_not_content() -> None:
    a = provenance.config_digest({"x": b"1", "y": b"2"})
    assert a == provenance.config_digest({"y": b"2", "x": b"1"})
    assert a != provenance.config_digest({"x": b"1", "y": b"3"})


def test_finalize_sets_every_time_and_keeps_pycs_valid(tmp_path: Path) -> None:
    script = _finalize_script()
    root = tmp_path / "root"
    package = root / "usr/lib/python3/dist-packages/pkg"
    package.mkdir(parents=True)
    source = package / "mod.py"
    source.write_text("VALUE = 1\n")
    os.utime(source, (1500000000, 1500000000))  # a .deb's time
    pyc = Path(py_compile.compile(str(source), doraise=True))
    hashed = Path(
        py_compile.compile(
            str(source),
            cfile=str(package / "__pycache__" / "other.cpython-311.pyc"),
            invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH,
        )
    )
    before_hashed = hashed.read_bytes()
    (root / "etc").mkdir()
    (root / "etc/made-at-install").write_text("x")
    (root / "etc/link").symlink_to("/nowhere")

    script.normalize(root, EPOCH)

    for path in [root, *root.rglob("*")]:
        assert path.lstat().st_mtime == EPOCH, path
    (recorded,) = struct.unpack("<I", pyc.read_bytes()[8:12])
    assert recorded == EPOCH == int(source.stat().st_mtime)  # still matches its source
    assert hashed.read_bytes() == before_hashed  # hash-based: nothing to restamp


def test_restamp_leaves_stale_and_hash_based_pycs_alone() -> None:
    script = _finalize_script()
    header = b"MAGI" + struct.pack("<III", 0, 1500000000, 10)
    assert script.restamp_pyc(header, 1500000000, EPOCH)[8:12] == struct.pack("<I", EPOCH)
    assert script.restamp_pyc(header, 1400000000, EPOCH) is None  # stale already
    assert script.restamp_pyc(b"MAGI" + struct.pack("<III", 1, 0, 0), 0, EPOCH) is None


def test_differences_are_merged_into_ranges_and_named_by_partition() -> None:
    assert reproduce.ranges([5000, 10, 11, 12, 9200]) == [(10, 13), (5000, 5001), (9200, 9201)]
    table = [
        Partition(0, contract.TYPE_ESP, "u", 2048, 4095, 0, "esp"),  # 1-2 MiB
        Partition(1, contract.TYPE_VAR, "u", 4096, 6143, 0, "var"),  # 2-3 MiB
    ]
    assert reproduce.locate([(100, 101), ((2 << 20) + 5, (2 << 20) + 9)], table) == [
        "bytes 100-101 (outside the partitions (GPT headers))",
        f"bytes {(2 << 20) + 5}-{(2 << 20) + 9} (partition var +5)",
    ]
    assert reproduce.bounded("a\nb\nc", lines=2) == "a\nb\n… 1 more lines"


def test_compare_names_each_differing_artifact(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    for d in (a, b):
        d.mkdir()
        (d / "same").write_bytes(b"x" * 100)
    (a / "disk.qcow2").write_bytes(b"\0" * 50 + b"A")
    (b / "disk.qcow2").write_bytes(b"\0" * 50 + b"B")
    found = reproduce.compare(a, b, ["same", "disk.qcow2"])
    assert [d.name for d in found] == ["disk.qcow2"]
    assert found[0].where == "byte 50"


def _with_provenance(**changes: object) -> contract.Manifest:
    source = provenance.Source(commit="ab" * 20, dirty=False, epoch=EPOCH)
    record = provenance.record(DEFAULTS, source, "12" * 32)
    return contract.Manifest(
        image_id="berth",
        version="1.0.0",
        engine="docker",
        roothash="cd" * 32,
        slot_size=1 << 30,
        verity_slot_size=69 << 20,
        artifacts={contract.SBOM: contract.Artifact(10, "ef" * 32)},
        provenance=dataclasses.replace(record, **changes),  # type: ignore[arg-type]
    )


def test_provenance_round_trips_through_the_manifest() -> None:
    manifest = _with_provenance()
    again = contract.Manifest.from_json(manifest.to_json())
    assert again.provenance == manifest.provenance
    assert again.provenance is not None and again.provenance.settings["engine"] == "docker"
    assert again.provenance.source_date_epoch == EPOCH
    assert again.provenance.package_lock_sha256 == "12" * 32
    # Manifests of builds before provenance still read.
    old = json.loads(manifest.to_json())
    del old["provenance"]
    assert contract.Manifest.from_json(json.dumps(old)).provenance is None


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("dirty", "no", "'provenance.dirty' must be bool"),
        ("source_date_epoch", "1", "'provenance.source_date_epoch' must be int"),
        ("settings", {"engine": ["docker"]}, "'provenance.settings.engine' must be str or int"),
        ("package_lock_sha256", None, "'provenance.package_lock_sha256' must be str"),
    ],
)
def test_a_mistyped_provenance_is_refused(field: str, value: object, message: str) -> None:
    document = json.loads(_with_provenance().to_json())
    document["provenance"][field] = value
    with pytest.raises(contract.ContractError, match=message):
        contract.Manifest.from_json(json.dumps(document))


def test_an_unpinned_run_names_no_versions_and_keeps_the_tree_s_own_cache(tmp_path: Path) -> None:
    command = driver.initrd_command(
        output_dir=tmp_path, mirror="http://deb.debian.org/debian", cache=tmp_path, epoch=EPOCH,
        pins=None,
    )
    assert not [a for a in command if a.startswith("--package=")]
    assert command[command.index("--cache-dir") + 1] == str(tmp_path / "mkosi" / "cache-initrd")
    # The lock reads what each run installed from the postinst's copy of the dpkg status.
    assert f"--postinst-script={driver.SCRIPTS / 'sbom.postinst'}" in command


def test_berths_mkosi_scripts_are_executable() -> None:
    # mkosi refuses a script without the exec bit, and only a real build would tell.
    scripts = sorted(driver.SCRIPTS.iterdir())
    assert [s.name for s in scripts] == [
        "drop-boot-seed.finalize",
        "normalize-times.finalize",
        "prune-initrd.finalize",
        "prune-modules.finalize",
        "sbom.postinst",
    ]
    assert all(os.access(s, os.X_OK) for s in scripts)


def test_the_esps_random_seed_is_dropped_from_the_image(tmp_path: Path) -> None:
    loader = tmp_path / "efi/loader"
    loader.mkdir(parents=True)
    (loader / "random-seed").write_bytes(os.urandom(32))
    (loader / "loader.conf").write_text("timeout 0\n")
    script = driver.SCRIPTS / "drop-boot-seed.finalize"
    for _ in range(2):  # and again where there is none
        subprocess.run([str(script)], env={"BUILDROOT": str(tmp_path)}, check=True)
    assert sorted(p.name for p in loader.iterdir()) == ["loader.conf"]
