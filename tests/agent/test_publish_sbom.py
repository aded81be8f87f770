"""`berth publish` signs the root's SBOM as a TUF target beside the release; a client
that lists releases sees the same three-target release as before."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

from tuf.ngclient import Updater

from updater.contract import SBOM
from updater.release import releases_from_targets, sbom_target_path

SBOM_BYTES = b'{"spdxVersion": "SPDX-2.3", "name": "berth_1.0 root"}\n'


def _with_sbom(source: Path, target: Path, sbom: bytes, listed: bytes) -> Path:
    shutil.copytree(source, target)
    (target / SBOM).write_bytes(sbom)
    manifest = json.loads((target / "manifest.json").read_text())
    manifest["artifacts"][SBOM] = {
        "size": len(listed),
        "sha256": hashlib.sha256(listed).hexdigest(),
    }
    (target / "manifest.json").write_text(json.dumps(manifest))
    return target


def test_sbom_is_a_signed_target_beside_the_release(
    server: Any, tmp_path: Path, releases: Any, keys_dir: Path, cli: Any
) -> None:
    release = _with_sbom(releases["1.0"].directory, tmp_path / "release", SBOM_BYTES, SBOM_BYTES)
    cli(["publish", str(release), "--repo", str(server.root / "repo"), "--keys", str(keys_dir)])

    cache = tmp_path / "client"
    cache.mkdir()
    (cache / "root.json").write_bytes((server.root / "repo/metadata/1.root.json").read_bytes())
    client = Updater(
        str(cache), f"{server.url}/repo/metadata/", str(tmp_path / "dl"), f"{server.url}/repo/targets/"
    )
    client.refresh()
    info = client.get_targetinfo(sbom_target_path("berth", "1.0"))
    assert info is not None
    assert Path(client.download_target(info)).read_bytes() == SBOM_BYTES  # hash and length checked
    signed = json.loads((cache / "targets.json").read_text())["signed"]
    assert [r.version for r in releases_from_targets(signed)] == ["1.0"]


def test_publish_refuses_an_sbom_the_manifest_does_not_match(
    tmp_path: Path, releases: Any, keys_dir: Path, cli: Any
) -> None:
    release = _with_sbom(releases["1.0"].directory, tmp_path / "release", SBOM_BYTES, b"other")
    repo = tmp_path / "repo"
    result = cli(["publish", str(release), "--repo", str(repo), "--keys", str(keys_dir)], check=False)
    assert result.returncode == 1
    assert f"{SBOM}: sha256 differs from manifest.json" in result.stderr
    assert not list((repo / "targets").rglob("*.*"))  # checked before anything was stored
