"""`berth keys init` and `berth publish`: metadata python-tuf's own client accepts."""

from __future__ import annotations

import hashlib
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
    cli(["publish", str(releases["1.0"].directory), *repo, "--frame-mib", "1", "--zstd-level", "3"])
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


def _tree(path: Path) -> dict[str, tuple[int, bytes]]:
    """Every file under ``path`` with its mode and bytes (empty when ``path`` does not exist)."""
    return {str(p.relative_to(path)): (p.stat().st_mode, p.read_bytes())
            for p in sorted(path.rglob("*")) if p.is_file()} if path.exists() else {}


def test_a_refused_publish_changes_nothing_and_says_why_in_one_line(
    tmp_path: Path, keys_dir: Path, releases: Any, cli: Any
) -> None:
    """Issue 11, finding 4: paths in image_id, a roothash= that only starts like the real one,
    versions that are not newer, a manifest that is not JSON, an already expired timestamp."""
    repo_dir, fresh = tmp_path / "repo", tmp_path / "fresh"
    repo = ["--repo", str(repo_dir), "--keys", str(keys_dir)]
    cli(["publish", str(releases["1.1"].directory), *repo])
    good = releases["1.0"].directory

    def variant(name: str, **manifest: Any) -> Path:
        directory = tmp_path / name
        subprocess.run(["cp", "-r", str(good), str(directory)], check=True)
        data = json.loads((directory / "manifest.json").read_text())
        (directory / "manifest.json").write_text(json.dumps({**data, "version": "1.2", **manifest}))
        return directory

    roothash = releases["1.0"].roothash
    longer = variant("longer-in-uki")
    uki = (longer / "uki.efi").read_bytes().replace(f"roothash={roothash}".encode(),
                                                      f"roothash={roothash}00".encode())
    (longer / "uki.efi").write_bytes(uki)
    manifest = json.loads((longer / "manifest.json").read_text())
    manifest["artifacts"]["uki.efi"]["sha256"] = hashlib.sha256(uki).hexdigest()
    (longer / "manifest.json").write_text(json.dumps(manifest))
    not_json = variant("not-json")
    (not_json / "manifest.json").write_text("{not json")
    cases = [
        (variant("dotdot", image_id="../x"), [], "image_id must be a name"),
        (variant("absolute", image_id=str(tmp_path / "elsewhere")), [], "image_id must be a name"),
        (variant("prefix", roothash=roothash[:4]), [], "root hash must be 64"),
        (variant("empty", roothash=""), [], "root hash must be 64"),
        (longer, [], f"lacks roothash={roothash}"),
        (variant("older", version="1.0.5"), [], "not newer than 1.1"),
        (variant("same", version="1.1.0"), [], "not newer than 1.1"),
        (not_json, [], "manifest.json: not JSON"),
        (variant("expired"), ["--timestamp-days", "-5"], "--timestamp-days must be at least 1"),
        (variant("level-0"), ["--zstd-level", "0"], "zstd level must be 1..22, got 0"),
        (variant("level-23"), ["--zstd-level", "23"], "zstd level must be 1..22, got 23"),
    ]
    for directory, extra, message in cases:
        for target in (repo_dir, fresh):
            if target == fresh and message.startswith("not newer"):
                continue  # a fresh repository has nothing newer: that publish would be fine
            before = _tree(tmp_path / "elsewhere"), _tree(repo_dir), _tree(fresh)
            result = cli(["publish", str(directory), "--repo", str(target), "--keys", str(keys_dir),
                          *extra], check=False)
            lines = result.stderr.strip().splitlines()
            assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
            assert lines[-1].startswith("berth: error:") and message in lines[-1], result.stderr
            assert (_tree(tmp_path / "elsewhere"), _tree(repo_dir), _tree(fresh)) == before, message
    for args in (["--refresh-timestamp", "--timestamp-days", "0"], ["--withdraw", "1.1", "--timestamp-days", "-1"]):
        before_repo = _tree(repo_dir)
        result = cli(["publish", *args, *repo], check=False)
        assert result.returncode == 1 and "--timestamp-days must be at least 1" in result.stderr
        assert _tree(repo_dir) == before_repo
