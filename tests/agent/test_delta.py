"""Updates by delta on a host on files: two releases that share most of their root, published
with `berth publish` (block indexes and blobs), served by a real `berth serve` or the test
server; the agent builds the new slot from its booted one and fetches only the rest."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.agent.conftest import BuiltRelease, Server, make_disk, make_host, publish
from updater.fleet.launch import running_server, write_config

Host = Any


def full_bytes(server: Server, version: str) -> int:
    """What the full download of a release weighs: its three signed slot/UKI targets."""
    return sum(p.stat().st_size for p in (server.root / "repo/targets/berth" / version).iterdir()
               if p.name.endswith((".zst", ".uki.efi")))


def slot_b_holds(host: Host, version: str) -> None:
    built = host.releases[version].directory
    assert host.slot_b(version) == [(built / n).read_bytes() for n in ("root.erofs", "root.verity")]
    assert host.verified_boot() == version


def went_whole(host: Host, why: str) -> None:
    """The agent updates to 1.1 by the full download, and logs ``why``."""
    result = host.agent("run", "--once")
    assert why in result.stderr
    slot_b_holds(host, "1.1")


@pytest.fixture
def fleet(tmp_path: Path, server: Server) -> Iterator[Any]:
    config = write_config(tmp_path, {
        "repository": str(server.root / "repo"),
        "admin_token": "adm",
        "groups": {"default": {"waves": [{"after": "0s", "percent": 100}]}},
    })
    with running_server(config, f"sqlite:///{tmp_path / 'fleet.sqlite3'}") as running:
        yield running


def test_an_update_by_delta_through_berth_serve_fetches_a_fraction_and_says_so(
        delta_host: Host, server: Server, fleet: Any) -> None:
    delta_host.settings(server_url=fleet.url, repo_url="", node_id="node-d")
    result = delta_host.agent("run", "--once")
    assert delta_host.state()["state"] == "rebooting", result.stderr
    assert "root: delta path" in result.stderr and "uki: delta path" in result.stderr
    slot_b_holds(delta_host, "1.1")
    history = requests.get(f"{fleet.url}/admin/hosts/node-d", timeout=10,
                           headers={"Authorization": "Bearer adm"}).json()
    [transfer] = history["transfers"]
    full = full_bytes(server, "1.1")
    assert transfer["path"] == "delta" and transfer["version"] == "1.1"
    assert transfer["bytes_full"] == full
    # The root's 6 MiB file came from slot a and most of the UKI from the ESP: what was
    # fetched is the verity tree (random salt: nothing to reuse), the indexes and the few
    # changed blocks.
    verity_zst = next((server.root / "repo/targets/berth/1.1").glob("*.root.verity.zst")).stat().st_size
    assert transfer["bytes_fetched"] < verity_zst + (128 << 10)
    assert transfer["bytes_fetched"] < 0.1 * full


def test_the_delta_fetches_only_the_missing_ranges_and_counts_them(delta_host: Host, server: Server) -> None:
    result = delta_host.agent("run", "--once")
    assert delta_host.state()["state"] == "rebooting", result.stderr
    slot_b_holds(delta_host, "1.1")
    decision = json.loads((delta_host.state_dir / "transfer-root.json").read_text())
    assert decision["path"] == "delta" and decision["version"] == "1.1"
    assert not any(p.endswith(".root.erofs.zst") for p in server.log)  # the full root never asked for
    blob = next((server.root / "repo/targets/berth/1.1").glob("*.root.erofs"))
    root_sent = sum(1 for p in server.log if p.endswith(blob.name))
    assert root_sent >= 1
    # The decision records the range requests the plan makes: the ones the server saw.
    assert decision["requests"] == root_sent
    assert f"in {root_sent} requests" in decision["why"]
    # Everything the server sent: less than the full download minus most of the root.
    assert server.bytes_sent < full_bytes(server, "1.1") - (3 << 20)


def test_full_path_when_the_booted_slot_does_not_verify(delta_host: Host) -> None:
    with open(delta_host.disk, "r+b") as handle:  # one flipped byte in slot a's root
        slot_a = next(p for p in _partitions(delta_host) if p["name"].startswith("berth_1.0"))
        handle.seek(slot_a["start"] * 512 + 8192)
        byte = handle.read(1)
        handle.seek(-1, os.SEEK_CUR)
        handle.write(bytes([byte[0] ^ 1]))
    result = delta_host.agent("run", "--once")
    assert "root: full path (the booted slot does not match its signed sha256)" in result.stderr
    slot_b_holds(delta_host, "1.1")


def test_full_path_when_a_delta_would_not_pay(tmp_path: Path, similar: dict[str, BuiltRelease],
                                              server: Server, keys_dir: Path) -> None:
    repo = server.root / "repo"
    publish(repo, keys_dir, similar["1.0"])
    publish(repo, keys_dir, similar["1.2"])  # shares nothing with 1.0
    disk = tmp_path / "base.raw"
    make_disk(disk, similar["1.0"])
    host = make_host(tmp_path, disk, similar, f"{server.url}/repo", repo / "metadata/root.json")
    result = host.agent("run", "--once")
    assert "root: full path (a delta would fetch" in result.stderr
    slot_b_holds(host, "1.2")


def test_full_path_when_the_server_does_not_serve_the_index(delta_host: Host, server: Server) -> None:
    for index in (server.root / "repo/targets/berth/1.1").glob("*.index"):
        index.unlink()
    went_whole(delta_host, "root: full path (the server does not serve the signed block index)")


def test_a_release_published_without_deltas_is_taken_whole(
        tmp_path: Path, similar: dict[str, BuiltRelease], server: Server, keys_dir: Path) -> None:
    repo = server.root / "repo"
    publish(repo, keys_dir, similar["1.0"])
    publish(repo, keys_dir, similar["1.1"], "--no-delta")
    stored = [p.name for p in (repo / "targets/berth/1.1").iterdir()]
    assert not [name for name in stored if name.endswith(".index")]
    assert not [name for name in stored if name.endswith((".root.erofs", ".root.verity"))]  # no blobs
    disk = tmp_path / "base.raw"
    make_disk(disk, similar["1.0"])
    host = make_host(tmp_path, disk, similar, f"{server.url}/repo", repo / "metadata/root.json")
    went_whole(host, "root: full path (the server offers no block index)")


def test_a_tampered_index_is_refused_and_the_full_download_used(delta_host: Host, server: Server) -> None:
    index = next((server.root / "repo/targets/berth/1.1").glob("*.root.erofs.index"))
    data = bytearray(index.read_bytes())
    data[-1] ^= 1
    index.write_bytes(bytes(data))
    went_whole(delta_host, "root: full path (block index refused")


def test_a_tampered_blob_range_is_refused_before_it_is_written(delta_host: Host, server: Server) -> None:
    blob = next((server.root / "repo/targets/berth/1.1").glob("*.root.erofs"))
    data = bytearray(blob.read_bytes())
    for at in range(0, len(data), 4096):  # every block the host could fetch
        data[at] ^= 0xFF
    blob.write_bytes(bytes(data))
    result = delta_host.agent("run", "--once")
    assert "does not match the signed block index; downloading it whole" in result.stderr
    slot_b_holds(delta_host, "1.1")
    assert json.loads((delta_host.state_dir / "transfer-root.json").read_text())["path"] == "full"


def test_a_server_that_ignores_ranges_gets_the_full_download(delta_host: Host, server: Server) -> None:
    server.ranges = False
    result = delta_host.agent("run", "--once")
    assert "answers range requests with the whole blob" in result.stderr
    slot_b_holds(delta_host, "1.1")


def test_python_tufs_client_accepts_the_index_targets(delta_host: Host, server: Server, tmp_path: Path) -> None:
    from tuf.ngclient import Updater

    metadata = tmp_path / "tuf-client"
    metadata.mkdir()
    (metadata / "root.json").write_bytes((server.root / "repo/metadata/root.json").read_bytes())
    client = Updater(str(metadata), f"{server.url}/repo/metadata/", str(tmp_path / "dl"),
                     f"{server.url}/repo/targets/")
    client.refresh()
    info = client.get_targetinfo("berth/1.1/root.erofs.index")
    assert info is not None and info.custom["berth-delta"]["blob"] == "berth/1.1/root.erofs"
    (tmp_path / "dl").mkdir()
    path = client.download_target(info)
    assert hashlib.sha256(Path(path).read_bytes()).hexdigest() == info.hashes["sha256"]


def test_berth_serve_answers_range_requests(fleet: Any, delta_host: Host, server: Server) -> None:
    blob = next((server.root / "repo/targets/berth/1.1").glob("*.root.erofs"))
    url = f"{fleet.url}/repo/targets/berth/1.1/{blob.name}"
    size, data = blob.stat().st_size, blob.read_bytes()
    part = requests.get(url, headers={"Range": "bytes=4096-8191"}, timeout=10)
    assert part.status_code == 206 and part.content == data[4096:8192]
    assert part.headers["Content-Range"] == f"bytes 4096-8191/{size}"
    beyond = requests.get(url, headers={"Range": f"bytes={size}-"}, timeout=10)
    assert beyond.status_code == 416
    for junk in ("bytes=9-3", "bytes=abc", "pages=1-2", "bytes=-"):
        answer = requests.get(url, headers={"Range": junk}, timeout=10)
        assert answer.status_code in (200, 206, 400, 416), (junk, answer.status_code)


def _partitions(host: Host) -> list[dict]:
    from tests.agent.conftest import sfdisk_json

    return sfdisk_json(host.disk)
