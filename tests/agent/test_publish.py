"""`berth keys init` and `berth publish`: metadata python-tuf's own client accepts."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from tuf.ngclient import Updater

from updater.release import ArtifactRole, releases_from_targets

Server = Any


def _client(server: Server, tmp_path: Path) -> Updater:
    cache = tmp_path / "client"
    cache.mkdir()
    (cache / "root.json").write_bytes((server.root / "repo/metadata/1.root.json").read_bytes())
    return Updater(str(cache), f"{server.url}/repo/metadata/", str(tmp_path / "dl"), f"{server.url}/repo/targets/")


def test_published_release_verifies_with_ngclient(server: Server, tmp_path: Path, releases: Any, cli: Any) -> None:
    keys = tmp_path / "keys"
    cli(["keys", "init", "--keys", str(keys), "--threshold", "root=2", "--threshold", "targets=2"])
    assert len(list(keys.glob("root-*.pem"))) == 2 and len(list(keys.glob("timestamp-*.pem"))) == 1
    repo = ["--repo", str(server.root / "repo"), "--keys", str(keys)]
    cli(["publish", str(releases["1.0"].directory), *repo, "--frame-mib", "1"])
    cli(["publish", str(releases["1.1"].directory), *repo, "--min-version", "1.0"])
    root = json.loads((server.root / "repo/metadata/root.json").read_text())["signed"]
    assert root["roles"]["root"]["threshold"] == 2 and root["consistent_snapshot"] is True

    client = _client(server, tmp_path)
    client.refresh()
    signed = json.loads((tmp_path / "client/targets.json").read_text())["signed"]
    found = releases_from_targets(signed)
    assert [r.version for r in found] == ["1.0", "1.1"]
    newest = found[-1]
    assert newest.roothash == releases["1.1"].roothash and newest.min_version == "1.0"
    manifest = json.loads((releases["1.1"].directory / "manifest.json").read_text())
    for role, name in ((ArtifactRole.ROOT, "root.erofs"), (ArtifactRole.VERITY, "root.verity")):
        artifact = newest.artifacts[role]
        assert artifact.target_path == f"berth/1.1/{name}.zst" and artifact.compression == "zstd"
        # ngclient downloads and checks each target (length and hash) itself too.
        info = client.get_targetinfo(artifact.target_path)
        assert info is not None
        path = client.download_target(info)
        # Plain zstd reads the multi-frame stream back to the exact slot image.
        plain = subprocess.run(["zstd", "-dc", path], capture_output=True, check=True).stdout
        assert plain == (releases["1.1"].directory / name).read_bytes()
        assert artifact.length < artifact.installed_size == len(plain)
        assert artifact.installed_sha256 == manifest["artifacts"][name]["sha256"]
    assert newest.artifacts[ArtifactRole.UKI].compression == "none"


def test_withdraw_and_refresh_timestamp(server: Server, tmp_path: Path, keys_dir: Path, releases: Any,
                                        cli: Any) -> None:
    repo = ["--repo", str(server.root / "repo"), "--keys", str(keys_dir)]
    cli(["publish", str(releases["1.0"].directory), *repo])
    before = json.loads((server.root / "repo/metadata/timestamp.json").read_text())["signed"]["version"]
    cli(["publish", "--refresh-timestamp", *repo])
    cli(["publish", "--withdraw", "1.0", *repo])
    client = _client(server, tmp_path)
    client.refresh()
    signed = json.loads((tmp_path / "client/targets.json").read_text())["signed"]
    assert releases_from_targets(signed)[0].withdrawn
    # The unversioned copy the fleet server reads is the targets the client verified.
    served = json.loads((server.root / "repo/metadata/targets.json").read_text())["signed"]
    assert served == signed
    after = json.loads((server.root / "repo/metadata/timestamp.json").read_text())["signed"]["version"]
    assert after == before + 2


def test_publish_refuses_bad_input(tmp_path: Path, keys_dir: Path, releases: Any, cli: Any) -> None:
    repo = ["--repo", str(tmp_path / "repo"), "--keys", str(keys_dir)]
    bad = tmp_path / "bad"
    subprocess.run(["cp", "-r", str(releases["1.0"].directory), str(bad)], check=True)
    (bad / "root.verity").write_bytes(b"not the verity tree")

    def refused(args: list[str], message: str) -> None:
        result = cli(args, check=False)
        last = result.stderr.strip().splitlines()[-1]
        assert result.returncode == 1 and last.startswith("berth: error:"), result.stderr
        assert message in result.stderr

    refused(["publish", str(bad), *repo], "sha256 differs from manifest.json")
    assert not list((tmp_path / "repo").rglob("*.zst"))  # nothing stored for a refused release
    (bad / "root.verity").write_bytes((releases["1.0"].directory / "root.verity").read_bytes())
    (bad / "uki.efi").write_bytes(b"MZ no command line")
    refused(["publish", str(bad), *repo], "lacks roothash=")
    refused(["publish", str(tmp_path), *repo], "no manifest.json")
    cli(["publish", str(releases["1.0"].directory), *repo])
    refused(["publish", str(releases["1.0"].directory), *repo], "already published")
    refused(["publish", "--withdraw", "7.0", *repo], "not published")
    refused(["publish", str(releases["1.1"].directory), "--repo", str(tmp_path / "r2"),
             "--keys", str(tmp_path)], "berth keys init")
    refused(["keys", "init", "--keys", str(keys_dir)], "already holds keys")
