"""The busybox image made on the host: a well-formed docker-archive that really runs."""

from __future__ import annotations

import hashlib
import json
import subprocess
import tarfile
from pathlib import Path

from qemu.container_image import TAG, write_busybox_archive


def test_archive_is_consistent_reproducible_and_its_shell_runs(tmp_path: Path) -> None:
    archive = tmp_path / "busybox.tar"
    assert write_busybox_archive(archive) == TAG
    with tarfile.open(archive) as tar:
        (entry,) = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
        assert entry["RepoTags"] == [TAG]
        config_bytes = tar.extractfile(entry["Config"]).read()  # type: ignore[union-attr]
        assert entry["Config"] == hashlib.sha256(config_bytes).hexdigest() + ".json"
        config = json.loads(config_bytes)
        (layer_name,) = entry["Layers"]
        layer = tar.extractfile(layer_name).read()  # type: ignore[union-attr]
    assert config["rootfs"]["diff_ids"] == ["sha256:" + hashlib.sha256(layer).hexdigest()]
    assert config["os"] == "linux" and config["architecture"] == "amd64"

    again = tmp_path / "again.tar"
    write_busybox_archive(again)
    assert again.read_bytes() == archive.read_bytes()

    root = tmp_path / "root"
    (tmp_path / "layer.tar").write_bytes(layer)
    with tarfile.open(tmp_path / "layer.tar") as tar:
        tar.extractall(root)  # our own archive; Python 3.11.2 has no filter= yet
    out = subprocess.run(
        [str(root / "bin/sh"), "-c", "echo hello from $(uname -s)"],
        capture_output=True, text=True, check=True, env={"PATH": str(root / "bin")},
    )
    assert out.stdout == "hello from Linux\n"
