"""`berth keys rotate`: a role's keys replaced in place, as python-tuf's own client sees it."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from tuf.api.exceptions import UnsignedMetadataError
from tuf.ngclient import Updater

from cli.errors import UserError
from updater.publish import rotation
from updater.publish.repository import Repository, init_keys

Server = Any


def _client(server: Server, tmp_path: Path, name: str) -> Updater:
    """A client that pinned the repository's first root, as a host's berth.tuf_root does;
    again for the same name: the same client's next refresh, from what it trusts by then."""
    cache = tmp_path / name
    if not cache.is_dir():
        cache.mkdir()
        (cache / "root.json").write_bytes((server.root / "repo/metadata/1.root.json").read_bytes())
    return Updater(str(cache), f"{server.url}/repo/metadata/", str(tmp_path / f"{name}-dl"),
                   f"{server.url}/repo/targets/")


def _published(server: Server, tmp_path: Path, releases: Any, cli: Any) -> tuple[Path, list[str]]:
    keys = tmp_path / "keys"
    init_keys(keys, {"root": 1, "targets": 1, "snapshot": 1, "timestamp": 1})
    repo = ["--repo", str(server.root / "repo"), "--keys", str(keys)]
    cli(["publish", str(releases["1.0"].directory), *repo, "--frame-mib", "1", "--zstd-level", "3"])
    return keys, repo


def _forge_targets(server: Server, keys: Path, old_targets_key: Path, tmp_path: Path) -> None:
    """What a thief of the old targets key signs (with the live snapshot and timestamp keys)."""
    forged = tmp_path / "forged-keys"
    forged.mkdir()
    shutil.copy(keys / "keys.json", forged)
    for role in ("root", "snapshot", "timestamp"):
        for path in keys.glob(f"{role}-*.pem"):
            shutil.copy(path, forged)
    shutil.copy(old_targets_key, forged / "targets-0.pem")
    Repository(server.root / "repo", forged).update_targets(lambda _: None, None)


def test_after_a_targets_rotation_clients_follow_and_the_old_key_signs_nothing(
    server: Server, tmp_path: Path, releases: Any, cli: Any
) -> None:
    keys, repo = _published(server, tmp_path, releases, cli)
    stolen = tmp_path / "stolen-targets.pem"
    shutil.copy(keys / "targets-0.pem", stolen)
    _client(server, tmp_path, "before").refresh()

    done = cli(["keys", "rotate", "--role", "targets", *repo])
    assert "root version 2" in done.stdout
    assert (keys / "retired/targets-before-root-2/targets-0.pem").read_bytes() == stolen.read_bytes()
    assert (keys / "targets-0.pem").read_bytes() != stolen.read_bytes()
    cli(["publish", str(releases["1.1"].directory), *repo, "--frame-mib", "1", "--zstd-level", "3"])
    for name in ("before", "fresh"):
        client = _client(server, tmp_path, name)
        client.refresh()
        assert client.get_targetinfo("berth/1.1/uki.efi") is not None

    _forge_targets(server, keys, stolen, tmp_path)
    with pytest.raises(UnsignedMetadataError):
        _client(server, tmp_path, "victim").refresh()


def test_a_root_rotation_is_signed_by_the_old_and_the_new_root_keys(
    server: Server, tmp_path: Path, releases: Any, cli: Any
) -> None:
    keys, repo = _published(server, tmp_path, releases, cli)
    old_root = (keys / "root-0.pem").read_bytes()
    cli(["keys", "rotate", "--role", "root", *repo])
    cli(["keys", "rotate", "--role", "timestamp", *repo])
    assert (keys / "root-0.pem").read_bytes() != old_root
    cli(["publish", str(releases["1.1"].directory), *repo, "--frame-mib", "1", "--zstd-level", "3"])
    client = _client(server, tmp_path, "pinned-v1")  # walks 2.root.json (and 3.root.json)
    client.refresh()
    assert client.get_targetinfo("berth/1.1/uki.efi") is not None
    assert (tmp_path / "pinned-v1/root.json").read_bytes() == (server.root / "repo/metadata/3.root.json").read_bytes()


def test_a_rotation_cut_short_blocks_publishing_until_run_again(
    server: Server, tmp_path: Path, releases: Any, cli: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys, repo = _published(server, tmp_path, releases, cli)

    def power_cut(*_: Any) -> None:
        raise OSError("power cut")

    real_swap = rotation._swap_private_keys
    monkeypatch.setattr(rotation, "_swap_private_keys", power_cut)
    with pytest.raises(OSError):  # the new root names the new keys; the old ones still sign
        rotation.rotate_keys(server.root / "repo", keys, "targets")
    refused = cli(["publish", str(releases["1.1"].directory), *repo], check=False)
    assert refused.returncode != 0 and "key rotation was cut short" in refused.stderr
    wrong = cli(["keys", "rotate", "--role", "snapshot", *repo], check=False)
    assert wrong.returncode != 0 and "--role targets" in wrong.stderr

    monkeypatch.setattr(rotation, "_swap_private_keys", real_swap)
    assert rotation.rotate_keys(server.root / "repo", keys, "targets") == 2  # no third root
    assert not (keys / "rotating").exists()
    cli(["publish", str(releases["1.1"].directory), *repo, "--frame-mib", "1", "--zstd-level", "3"])
    client = _client(server, tmp_path, "after")
    client.refresh()
    assert client.get_targetinfo("berth/1.1/uki.efi") is not None


def test_rotating_needs_a_published_repository(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    init_keys(keys, {"root": 1, "targets": 1, "snapshot": 1, "timestamp": 1})
    with pytest.raises(UserError, match="no repository here yet"):
        rotation.rotate_keys(tmp_path / "repo", keys, "targets")
