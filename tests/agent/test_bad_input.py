"""Bad input is refused with a clear log line, and the booted system is left as it was.

Metadata attacks (signatures, expiry, rollback, mix-and-match) are caught by
python-tuf's ngclient before a byte is written: the whole disk is unchanged.
Target attacks are caught while streaming into the inactive slot: the booted
slot, its table entries and the ESP are unchanged, and the inactive slot is
left labelled empty so nothing can boot it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from updater.publish.repository import Repository

Host = Server = Any  # fixtures from conftest.py


def _target(server: Server, version: str, suffix: str) -> Path:
    return next((server.root / "repo/targets/berth" / version).glob(f"*.{suffix}"))


def _refused(host: Host, message: str) -> str:
    result = host.agent("run", "--once")
    assert message in result.stderr, result.stderr
    assert host.verified_boot() == "1.0"
    return result.stderr


def _nothing_changed(host: Host, message: str) -> None:
    before = host.fingerprint()
    _refused(host, message)
    assert host.fingerprint() == before
    assert host.state()["state"] == "idle"


def _inactive_slot_abandoned(host: Host, message: str) -> None:
    before = host.booted_fingerprint()
    _refused(host, message)
    assert host.booted_fingerprint() == before
    assert host.state()["state"] == "idle"
    status = json.loads(host.agent("status", "--json").stdout)
    assert status["slots"]["b"]["label"] == "_empty"


@pytest.mark.parametrize("suffix", ["root.erofs.zst", "root.verity.zst", "uki.efi"])
def test_tampered_target_is_refused(host: Host, server: Server, suffix: str) -> None:
    target = _target(server, "1.1", suffix)
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    _inactive_slot_abandoned(host, "update to 1.1 abandoned")


def test_target_longer_than_signed_is_refused(host: Host, server: Server) -> None:
    target = _target(server, "1.1", "root.verity.zst")
    target.write_bytes(target.read_bytes() + b"\0" * 4096)
    _inactive_slot_abandoned(host, "longer than the signed")


def test_metadata_with_a_bad_signature_is_refused(host: Host, server: Server) -> None:
    path = max((server.root / "repo/metadata").glob("*.targets.json"))
    data = json.loads(path.read_text())
    data["signed"]["targets"]["berth/1.1/root.erofs.zst"]["custom"]["berth"]["roothash"] = "0" * 64
    path.write_text(json.dumps(data))
    _nothing_changed(host, "repository metadata refused")


def test_metadata_without_signatures_is_refused(host: Host, server: Server) -> None:
    path = server.root / "repo/metadata/timestamp.json"
    data = json.loads(path.read_text())
    data["signatures"] = []
    path.write_text(json.dumps(data))
    _nothing_changed(host, "repository metadata refused")


def _repo_args(server: Server, keys_dir: Path) -> list[str]:
    return ["--repo", str(server.root / "repo"), "--keys", str(keys_dir)]


def _withdraw(cli: Any, server: Server, keys_dir: Path, version: str) -> None:
    cli(["publish", "--withdraw", version, *_repo_args(server, keys_dir)])


def test_withdrawn_release_is_not_taken(host: Host, server: Server, keys_dir: Path, cli: Any) -> None:
    _withdraw(cli, server, keys_dir, "1.1")
    _nothing_changed(host, "no update")


def test_expired_metadata_is_refused(host: Host, server: Server, keys_dir: Path, cli: Any) -> None:
    # `berth publish` refuses to sign an expired timestamp; a clock two days back does it.
    past = datetime.now(UTC) - timedelta(days=2)
    Repository(server.root / "repo", keys_dir, now=lambda: past).refresh_timestamp()
    _nothing_changed(host, "expired")


def test_rolled_back_metadata_is_refused(host: Host, server: Server, keys_dir: Path, cli: Any) -> None:
    metadata = server.root / "repo/metadata"
    old = server.root / "old-metadata"
    shutil.copytree(metadata, old)
    _withdraw(cli, server, keys_dir, "1.1")
    assert "no update" in host.agent("run", "--once").stderr
    shutil.rmtree(metadata)
    shutil.copytree(old, metadata)  # an older, still valid state that offers 1.1
    _nothing_changed(host, "repository metadata refused")


def test_mix_and_match_metadata_is_refused(host: Host, server: Server, keys_dir: Path, cli: Any) -> None:
    metadata = server.root / "repo/metadata"
    offering = max(metadata.glob("*.targets.json"), key=lambda p: int(p.name.split(".")[0]))
    _withdraw(cli, server, keys_dir, "1.1")
    newest = max(metadata.glob("*.targets.json"), key=lambda p: int(p.name.split(".")[0]))
    newest.write_bytes(offering.read_bytes())  # validly signed, but not what the snapshot names
    _nothing_changed(host, "repository metadata refused")


def test_release_larger_than_the_slot_is_refused(host: Host, server: Server, keys_dir: Path, releases: Any,
                                                 tmp_path: Path, cli: Any) -> None:
    big = tmp_path / "berth_1.5"
    shutil.copytree(releases["1.1"].directory, big)
    manifest = json.loads((big / "manifest.json").read_text())
    manifest.update(version="1.5", slot_size=64 << 20)
    (big / "manifest.json").write_text(json.dumps(manifest))
    cli(["publish", str(big), *_repo_args(server, keys_dir)])
    _nothing_changed(host, "release 1.5 refused: needs slots of 67108864")


@pytest.mark.parametrize("ranges", [True, False], ids=["range-request", "server-without-ranges"])
def test_server_stopping_mid_download_resumes_later(host: Host, server: Server, ranges: bool) -> None:
    server.ranges = ranges
    target = _target(server, "1.1", "root.erofs.zst")
    server.cut_after[target.name] = target.stat().st_size // 2
    before = host.booted_fingerprint()
    result = host.agent("run", "--once")
    assert "will retry" in result.stderr, result.stderr
    assert host.booted_fingerprint() == before and host.verified_boot() == "1.0"
    assert host.state()["state"] == "writing"
    sent = server.bytes_sent
    host.agent("run", "--once")
    assert host.state()["state"] == "rebooting" and host.verified_boot() == "1.1"
    # With range requests it resumed from the last whole frame, not from the start.
    assert (server.bytes_sent - sent < target.stat().st_size) is ranges


def test_full_var_is_refused_and_recovers(host: Host, tmp_path: Path) -> None:
    state_dir = host.state_dir
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(state_dir)],
                             capture_output=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs to fill up: {mounted.stderr.decode().strip()}")
    try:
        filler = state_dir / "filler"
        with open(filler, "wb", buffering=0) as handle, pytest.raises(OSError, match="No space"):
            while True:
                handle.write(b"\0" * 512)
        before = host.fingerprint()
        result = host.agent("run", "--once", check=False)
        assert "No space left on device" in result.stderr, result.stderr
        assert host.fingerprint() == before and host.verified_boot() == "1.0"
        filler.unlink()
        host.agent("run", "--once")
        assert host.verified_boot() == "1.1"
    finally:
        subprocess.run(["umount", str(state_dir)], check=True)
